package wsframe

import (
	"encoding/binary"
	"errors"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode byte

// The opcodes RFC 6455 defines; all others are reserved.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether o is a control opcode (close, ping, pong or a
// reserved control opcode).
func (o Opcode) IsControl() bool { return o&0x8 != 0 }

func (o Opcode) known() bool {
	switch o {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return true
	}
	return false
}

// Reserved bits of the first header byte, as Header.Rsv holds them.
const (
	Rsv1 byte = 0x4 // permessage-deflate's "compressed" bit
	Rsv2 byte = 0x2
	Rsv3 byte = 0x1
)

// MaxHeaderLen is the longest frame header: 2 bytes, 8 of extended length
// and 4 of mask.
const MaxHeaderLen = 14

// MaxControlPayload is the largest payload a control frame may carry.
const MaxControlPayload = 125

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	Rsv    byte // RSV1..RSV3 in the low three bits (see Rsv1)
	Op     Opcode
	Masked bool
	Mask   [4]byte
	Length int64
}

// ErrBadLength reports a payload length that is not minimally encoded or
// has the most significant bit set; RFC 6455 forbids both.
var ErrBadLength = errors.New("wsframe: bad payload length encoding")

// ParseHeader parses the frame header at the start of p. It returns the
// header and its length in bytes, or n == 0 when p does not yet hold the
// whole header. Only the length encoding is checked here; the Decoder
// checks the rest.
func ParseHeader(p []byte) (h Header, n int, err error) {
	if len(p) < 2 {
		return h, 0, nil
	}
	b0, b1 := p[0], p[1]
	h.Fin = b0&0x80 != 0
	h.Rsv = (b0 >> 4) & 0x7
	h.Op = Opcode(b0 & 0xf)
	h.Masked = b1&0x80 != 0
	n = 2
	switch l := b1 & 0x7f; l {
	case 126:
		if len(p) < 4 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(p[2:]))
		if h.Length < 126 {
			return h, 0, ErrBadLength
		}
		n = 4
	case 127:
		if len(p) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(p[2:])
		if u>>63 != 0 || u <= 0xffff {
			return h, 0, ErrBadLength
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(p) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], p[n:n+4])
		n += 4
	}
	return h, n, nil
}

// AppendHeader appends an unmasked frame header (server to client).
func AppendHeader(dst []byte, fin bool, rsv byte, op Opcode, length int) []byte {
	return appendHeader(dst, fin, rsv, op, length, false)
}

func appendHeader(dst []byte, fin bool, rsv byte, op Opcode, length int, masked bool) []byte {
	b0 := byte(op) | (rsv&0x7)<<4
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case length < 126:
		return append(dst, b0, m|byte(length))
	case length <= 0xffff:
		return append(dst, b0, m|126, byte(length>>8), byte(length))
	default:
		dst = append(dst, b0, m|127)
		return binary.BigEndian.AppendUint64(dst, uint64(length))
	}
}

// HeaderLen returns the length of an unmasked header for a payload of n
// bytes.
func HeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendFrame appends one final, unmasked frame (server to client).
func AppendFrame(dst []byte, op Opcode, rsv byte, payload []byte) []byte {
	dst = AppendHeader(dst, true, rsv, op, len(payload))
	return append(dst, payload...)
}

// AppendMaskedFrame appends one masked frame (client to server), masking a
// copy of payload with key.
func AppendMaskedFrame(dst []byte, fin bool, rsv byte, op Opcode, payload []byte, key [4]byte) []byte {
	dst = appendHeader(dst, fin, rsv, op, len(payload), true)
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	Mask(dst[start:], key, 0)
	return dst
}

// Mask XORs b in place with key, as if b started at byte offset pos of a
// frame's payload.
func Mask(b []byte, key [4]byte, pos int) {
	var k [4]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k32 := binary.LittleEndian.Uint32(k[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}
