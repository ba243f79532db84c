package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var key = [4]byte{0x37, 0xfa, 0x21, 0x3d}

func masked(fin bool, rsv byte, op Opcode, payload []byte) []byte {
	return AppendMaskedFrame(nil, fin, rsv, op, payload, key)
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

type result struct {
	msgs []Message
	code StatusCode // 0 if no error
}

// decodeAll feeds in to a fresh decoder in pieces of at most step bytes
// (0: all at once), keeping unconsumed bytes as gnet would.
func decodeAll(t testing.TB, in []byte, lim *Limits, step int) result {
	t.Helper()
	in = bytes.Clone(in)
	var d Decoder
	var r result
	var pending []byte
	for off := 0; off < len(in) || len(pending) > 0; {
		end := len(in)
		if step > 0 && off+step < end {
			end = off + step
		}
		pending = append(pending, in[off:end]...)
		off = end
		for {
			n, m, ok, err := d.Decode(pending, lim)
			if int64(len(d.buf)) > lim.MaxMessage {
				t.Fatalf("the decoder holds %d bytes of a message, past the cap of %d", len(d.buf), lim.MaxMessage)
			}
			if err != nil {
				var ce *CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("error %v is not a *CloseError", err)
				}
				r.code = ce.Code
				return r
			}
			if ok {
				m.Payload = bytes.Clone(m.Payload)
				m.Owned = false
				r.msgs = append(r.msgs, m)
			}
			pending = pending[n:]
			if !ok {
				break
			}
		}
		if off == len(in) {
			break
		}
	}
	if len(pending) > 0 && r.code == 0 {
		r.code = 1 // stream ended inside a frame
	}
	return r
}

var lim = &Limits{MaxMessage: 1 << 20}

func TestDecoderRules(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 70000)
	cases := []struct {
		name string
		in   []byte
		lim  *Limits
		want []Message
		code StatusCode
	}{
		{"text", masked(true, 0, OpText, []byte("hello")), lim, []Message{{Op: OpText, Payload: []byte("hello")}}, 0},
		{"binary empty", masked(true, 0, OpBinary, nil), lim, []Message{{Op: OpBinary, Payload: []byte{}}}, 0},
		{"16-bit length", masked(true, 0, OpBinary, big[:300]), lim, []Message{{Op: OpBinary, Payload: big[:300]}}, 0},
		{"64-bit length", masked(true, 0, OpBinary, big), lim, []Message{{Op: OpBinary, Payload: big}}, 0},
		{"unmasked", AppendFrame(nil, OpText, 0, []byte("x")), lim, nil, CloseProtocolError},
		{"masked from server", masked(true, 0, OpText, []byte("x")), &Limits{MaxMessage: 10, FromServer: true}, nil, CloseProtocolError},
		{"rsv1 without deflate", masked(true, Rsv1, OpText, []byte("x")), lim, nil, CloseProtocolError},
		{"rsv2", masked(true, Rsv2, OpText, []byte("x")), &Limits{MaxMessage: 10, Deflate: true}, nil, CloseProtocolError},
		{"rsv3", masked(true, Rsv3, OpBinary, []byte("x")), lim, nil, CloseProtocolError},
		{"rsv1 on control", masked(true, Rsv1, OpPing, nil), &Limits{MaxMessage: 10, Deflate: true}, nil, CloseProtocolError},
		{"rsv1 on continuation", cat(masked(false, Rsv1, OpText, []byte("a")), masked(true, Rsv1, OpContinuation, []byte("b"))), &Limits{MaxMessage: 10, Deflate: true}, nil, CloseProtocolError},
		{"rsv1 with deflate", masked(true, Rsv1, OpBinary, []byte{1}), &Limits{MaxMessage: 10, Deflate: true}, []Message{{Op: OpBinary, Payload: []byte{1}, Compressed: true}}, 0},
		{"opcode 3", masked(true, 0, 3, nil), lim, nil, CloseProtocolError},
		{"opcode 0xB", masked(true, 0, 0xB, nil), lim, nil, CloseProtocolError},
		{"ping 125", masked(true, 0, OpPing, big[:125]), lim, []Message{{Op: OpPing, Payload: big[:125]}}, 0},
		{"ping 126", masked(true, 0, OpPing, big[:126]), lim, nil, CloseProtocolError},
		{"fragmented ping", masked(false, 0, OpPing, nil), lim, nil, CloseProtocolError},
		{"fragments", cat(masked(false, 0, OpText, []byte("he")), masked(false, 0, OpContinuation, []byte("l")), masked(true, 0, OpContinuation, []byte("lo"))), lim,
			[]Message{{Op: OpText, Payload: []byte("hello")}}, 0},
		{"ping between fragments", cat(masked(false, 0, OpBinary, []byte("a")), masked(true, 0, OpPing, []byte("p")), masked(true, 0, OpContinuation, []byte("b"))), lim,
			[]Message{{Op: OpPing, Payload: []byte("p")}, {Op: OpBinary, Payload: []byte("ab")}}, 0},
		{"continuation first", masked(true, 0, OpContinuation, []byte("x")), lim, nil, CloseProtocolError},
		{"text inside fragments", cat(masked(false, 0, OpText, []byte("a")), masked(true, 0, OpText, []byte("b"))), lim, nil, CloseProtocolError},
		{"invalid utf8", masked(true, 0, OpText, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}), lim, nil, CloseInvalidPayload},
		{"utf8 split across fragments", cat(masked(false, 0, OpText, []byte{0xe2, 0x82}), masked(true, 0, OpContinuation, []byte{0xac})), lim,
			[]Message{{Op: OpText, Payload: []byte("€")}}, 0},
		{"utf8 truncated at end", cat(masked(false, 0, OpText, []byte{0xe2, 0x82}), masked(true, 0, OpContinuation, nil)), lim, nil, CloseInvalidPayload},
		{"invalid utf8 binary is fine", masked(true, 0, OpBinary, []byte{0xff}), lim, []Message{{Op: OpBinary, Payload: []byte{0xff}}}, 0},
		{"too big", masked(true, 0, OpBinary, big[:11]), &Limits{MaxMessage: 10}, nil, CloseMessageTooBig},
		{"too big over fragments", cat(masked(false, 0, OpBinary, big[:6]), masked(true, 0, OpContinuation, big[:6])), &Limits{MaxMessage: 10}, nil, CloseMessageTooBig},
		{"exactly max", masked(true, 0, OpBinary, big[:10]), &Limits{MaxMessage: 10}, []Message{{Op: OpBinary, Payload: big[:10]}}, 0},
		{"close empty", masked(true, 0, OpClose, nil), lim, []Message{{Op: OpClose, Payload: []byte{}}}, 0},
		{"close 1000 reason", masked(true, 0, OpClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}), lim, []Message{{Op: OpClose, Payload: []byte{0x03, 0xe8, 'b', 'y', 'e'}}}, 0},
		{"close one byte", masked(true, 0, OpClose, []byte{0x03}), lim, nil, CloseProtocolError},
		{"close code 1005", masked(true, 0, OpClose, []byte{0x03, 0xed}), lim, nil, CloseProtocolError},
		{"close code 999", masked(true, 0, OpClose, []byte{0x03, 0xe7}), lim, nil, CloseProtocolError},
		{"close code 5000", masked(true, 0, OpClose, []byte{0x13, 0x88}), lim, nil, CloseProtocolError},
		{"close code 4999", masked(true, 0, OpClose, []byte{0x13, 0x87}), lim, []Message{{Op: OpClose, Payload: []byte{0x13, 0x87}}}, 0},
		{"close bad reason", masked(true, 0, OpClose, []byte{0x03, 0xe8, 0xff}), lim, nil, CloseProtocolError},
		{"non-minimal 16-bit length", []byte{0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0}, lim, nil, CloseProtocolError},
		{"64-bit length msb", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, lim, nil, CloseProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 3, 7} {
				r := decodeAll(t, tc.in, tc.lim, step)
				if r.code != tc.code {
					t.Fatalf("step %d: code %d, want %d", step, r.code, tc.code)
				}
				if tc.code != 0 {
					continue
				}
				if len(r.msgs) != len(tc.want) {
					t.Fatalf("step %d: %d messages, want %d", step, len(r.msgs), len(tc.want))
				}
				for i, m := range r.msgs {
					w := tc.want[i]
					if m.Op != w.Op || m.Compressed != w.Compressed || !bytes.Equal(m.Payload, w.Payload) {
						t.Fatalf("step %d: message %d = %v %v %q, want %v %v %q", step, i, m.Op, m.Compressed, m.Payload, w.Op, w.Compressed, w.Payload)
					}
				}
			}
		})
	}
}

func TestDecoderFailsFastOnUTF8(t *testing.T) {
	// A text frame declaring 100 bytes whose third byte already makes it
	// invalid must fail before the rest arrives.
	payload := append([]byte("ab\xff"), bytes.Repeat([]byte("c"), 97)...)
	frame := masked(true, 0, OpText, payload)
	var d Decoder
	_, _, _, err := d.Decode(frame[:2+4+3], lim) // header, mask, three payload bytes
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseInvalidPayload {
		t.Fatalf("err = %v, want close 1007 before the frame is complete", err)
	}
}

func TestDecoderRejectsOversizeBeforePayload(t *testing.T) {
	// Only the header of a 2 MiB frame: the cap must trip on it alone.
	hdr := masked(true, 0, OpBinary, make([]byte, 2<<20))[:14]
	var d Decoder
	_, _, _, err := d.Decode(hdr, lim)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseMessageTooBig {
		t.Fatalf("err = %v, want close 1009 on the header alone", err)
	}
}

// A continuation whose length, added to what the message holds, would
// pass 2^63 must still trip the cap, not wrap it and be buffered.
func TestDecoderRejectsLengthThatWrapsTheSum(t *testing.T) {
	var d Decoder
	first := masked(false, 0, OpBinary, []byte("x"))
	if n, _, ok, err := d.Decode(first, lim); err != nil || ok || n != len(first) {
		t.Fatalf("first fragment: n=%d ok=%v err=%v", n, ok, err)
	}
	_, _, _, err := d.Decode(append(hugeContinuation(), make([]byte, 4096)...), lim)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseMessageTooBig {
		t.Fatalf("err = %v with %d bytes buffered, want close 1009", err, len(d.buf))
	}
}

// hugeContinuation is the header of a final masked continuation frame of
// 2^63-1 bytes.
func hugeContinuation() []byte {
	hdr := binary.BigEndian.AppendUint64([]byte{0x80, 0x80 | 127}, 1<<63-1)
	return append(hdr, 1, 2, 3, 4)
}

func TestDecoderIdle(t *testing.T) {
	var d Decoder
	frame := masked(true, 0, OpBinary, make([]byte, 1000))
	n, _, ok, err := d.Decode(frame[:500], lim)
	if err != nil || ok || n != 500 {
		t.Fatalf("partial: n=%d ok=%v err=%v", n, ok, err)
	}
	if d.Idle() {
		t.Fatal("decoder with a partial frame reports idle")
	}
	_, m, ok, err := d.Decode(frame[500:], lim)
	if err != nil || !ok || len(m.Payload) != 1000 || !m.Owned {
		t.Fatalf("rest: ok=%v err=%v len=%d owned=%v", ok, err, len(m.Payload), m.Owned)
	}
	if !d.Idle() {
		t.Fatal("decoder not idle after a whole message")
	}
}

func TestUTF8StateMatchesStdlib(t *testing.T) {
	inputs := []string{"", "hello", "κόσμε", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe0\x80\xaf", "a\xffb", "\xf0\x9f\x98\x80", strings.Repeat("x", 20) + "\x80"}
	for _, in := range inputs {
		s, ok := UTF8State(0).Valid([]byte(in))
		got := ok && s.Complete()
		if got != utf8.ValidString(in) {
			t.Errorf("%q: valid=%v, stdlib says %v", in, got, utf8.ValidString(in))
		}
	}
}

func TestAppendCloseTrimsReason(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	f := AppendClose(nil, CloseNormal, long)
	h, n, err := ParseHeader(f)
	if err != nil || h.Length > MaxControlPayload {
		t.Fatalf("close frame length %d, err %v", h.Length, err)
	}
	code, reason := ParseClose(f[n:])
	if code != CloseNormal || !utf8.Valid(reason) {
		t.Fatalf("code %d reason valid=%v", code, utf8.Valid(reason))
	}
}
