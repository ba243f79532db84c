package wsframe

import (
	"fmt"
	"unicode/utf8"
)

// CloseError is a protocol failure: the connection must be closed with
// Code. Reason is safe to send to the peer.
type CloseError struct {
	Code   StatusCode
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("wsframe: close %d: %s", e.Code, e.Reason) }

// The Decoder's failures. They are values, so failing costs no allocation.
var (
	errUnmasked       = &CloseError{CloseProtocolError, "client frame not masked"}
	errMasked         = &CloseError{CloseProtocolError, "server frame masked"}
	errRsv            = &CloseError{CloseProtocolError, "reserved bit set"}
	errOpcode         = &CloseError{CloseProtocolError, "unknown opcode"}
	errControlLen     = &CloseError{CloseProtocolError, "control frame over 125 bytes"}
	errControlFrag    = &CloseError{CloseProtocolError, "fragmented control frame"}
	errContinuation   = &CloseError{CloseProtocolError, "continuation without a message"}
	errNewInFragments = &CloseError{CloseProtocolError, "new message inside a fragmented one"}
	errLength         = &CloseError{CloseProtocolError, "bad payload length"}
	errTooBig         = &CloseError{CloseMessageTooBig, "message too big"}
	// ErrUTF8 is text that is not UTF-8 (1007), also for a caller that
	// inflates a compressed text message and checks it then.
	ErrUTF8         = &CloseError{CloseInvalidPayload, "text is not UTF-8"}
	errCloseOneByte = &CloseError{CloseProtocolError, "close payload of one byte"}
	errCloseCode    = &CloseError{CloseProtocolError, "invalid close code"}
	errCloseReason  = &CloseError{CloseProtocolError, "close reason is not UTF-8"}
)

// Limits configure Decoders; one value is shared by many.
type Limits struct {
	// MaxMessage caps a data message's size on the wire, summed over its
	// fragments. A frame that would pass it fails with 1009 as soon as its
	// header arrives, before its payload is buffered.
	MaxMessage int64
	// Deflate allows RSV1 on the first frame of a data message:
	// permessage-deflate was negotiated.
	Deflate bool
	// FromServer decodes what a server sends (a client's view): frames must
	// not be masked. Otherwise frames must be masked.
	FromServer bool
}

// Message is a complete data message or one control frame.
type Message struct {
	Op         Opcode // OpText, OpBinary, OpClose, OpPing or OpPong
	Payload    []byte
	Compressed bool // RSV1 was set: Payload is raw DEFLATE data, not yet UTF-8-checked
	// Owned reports that Payload is a buffer the caller may keep. Otherwise
	// it aliases the input and is valid only as long as the input is.
	Owned bool
}

// Decoder turns a stream of frames into messages, enforcing RFC 6455:
// masking, reserved bits and opcodes, control frame rules, fragmentation
// order, the size cap and UTF-8 in text (checked as bytes arrive, so an
// invalid text fails at the first bad byte). The zero value is ready.
//
// A Decoder holds state only while a frame or message is incomplete; Idle
// reports when it holds none, so the caller may drop it.
type Decoder struct {
	buf     []byte // the message assembled so far; nil when none is open
	hdr     Header // the frame whose payload is arriving
	remain  int64  // payload bytes of hdr still to come
	inFrame bool
	msgOp   Opcode // first opcode of the open message; 0 if none
	comp    bool
	utf8    UTF8State
}

// Idle reports whether d holds no partial frame or message.
func (d *Decoder) Idle() bool { return !d.inFrame && d.msgOp == 0 }

// Decode consumes frames from p. It returns how many bytes it consumed
// and, when ok, one complete message; call it again on the rest of p for
// the next. When ok is false and err is nil, the bytes after p[:n] are an
// incomplete header or control frame that must be presented again with
// more input behind them. Payload bytes of an incomplete data frame are
// consumed into the Decoder, so a large message is never held twice.
//
// Payloads are unmasked in place: p is modified. A non-nil error is a
// *CloseError; the stream is then unusable.
func (d *Decoder) Decode(p []byte, lim *Limits) (n int, m Message, ok bool, err error) {
	for {
		if !d.inFrame {
			h, hn, err := ParseHeader(p[n:])
			if err != nil {
				return n, m, false, errLength
			}
			if hn == 0 {
				return n, m, false, nil
			}
			if err := d.check(&h, lim); err != nil {
				return n, m, false, err
			}
			body := p[n+hn:]
			if h.Op.IsControl() {
				if int64(len(body)) < h.Length {
					return n, m, false, nil
				}
				payload := body[:h.Length]
				if h.Masked {
					Mask(payload, h.Mask, 0)
				}
				if h.Op == OpClose {
					if err := checkClosePayload(payload); err != nil {
						return n, m, false, err
					}
				}
				return n + hn + len(payload), Message{Op: h.Op, Payload: payload}, true, nil
			}
			comp := h.Rsv&Rsv1 != 0
			if d.msgOp == 0 && h.Fin && int64(len(body)) >= h.Length {
				// A whole unfragmented message is here: hand it out in place.
				payload := body[:h.Length]
				if h.Masked {
					Mask(payload, h.Mask, 0)
				}
				if h.Op == OpText && !comp && !utf8.Valid(payload) {
					return n, m, false, ErrUTF8
				}
				return n + hn + len(payload), Message{Op: h.Op, Payload: payload, Compressed: comp}, true, nil
			}
			n += hn
			d.inFrame, d.hdr, d.remain = true, h, h.Length
			if d.msgOp == 0 {
				d.msgOp, d.comp, d.utf8 = h.Op, comp, 0
				// Size the buffer by what has arrived, not by what the header
				// claims: a header alone must not reserve a megabyte.
				d.buf = make([]byte, 0, min(h.Length, int64(len(body))))
			}
		}

		take := int64(len(p) - n)
		if take > d.remain {
			take = d.remain
		}
		chunk := p[n : n+int(take)]
		if d.hdr.Masked {
			Mask(chunk, d.hdr.Mask, int((d.hdr.Length-d.remain)&3))
		}
		if d.msgOp == OpText && !d.comp {
			var valid bool
			if d.utf8, valid = d.utf8.Valid(chunk); !valid {
				return n, m, false, ErrUTF8
			}
		}
		d.buf = append(d.buf, chunk...)
		n += int(take)
		d.remain -= take
		if d.remain > 0 {
			return n, m, false, nil
		}
		d.inFrame = false
		if !d.hdr.Fin {
			continue
		}
		if d.msgOp == OpText && !d.comp && !d.utf8.Complete() {
			return n, m, false, ErrUTF8
		}
		m = Message{Op: d.msgOp, Payload: d.buf, Compressed: d.comp, Owned: true}
		*d = Decoder{}
		return n, m, true, nil
	}
}

func (d *Decoder) check(h *Header, lim *Limits) error {
	if h.Masked == lim.FromServer {
		if lim.FromServer {
			return errMasked
		}
		return errUnmasked
	}
	if !h.Op.known() {
		return errOpcode
	}
	if h.Rsv&^Rsv1 != 0 {
		return errRsv
	}
	if h.Rsv&Rsv1 != 0 && (!lim.Deflate || (h.Op != OpText && h.Op != OpBinary)) {
		return errRsv
	}
	if h.Op.IsControl() {
		if !h.Fin {
			return errControlFrag
		}
		if h.Length > MaxControlPayload {
			return errControlLen
		}
		return nil
	}
	switch {
	case h.Op == OpContinuation && d.msgOp == 0:
		return errContinuation
	case h.Op != OpContinuation && d.msgOp != 0:
		return errNewInFragments
	}
	// Subtracted, not added: a length near 2^63 would wrap the sum.
	if h.Length > lim.MaxMessage-int64(len(d.buf)) {
		return errTooBig
	}
	return nil
}
