package wsframe

import "encoding/binary"

// UTF8State carries a UTF-8 check across the pieces of a text message. The
// zero value is "between characters".
type UTF8State uint8

// States of the validating automaton. Each names what the next byte must
// be; RFC 3629's table decides every transition, so a sequence fails at
// the first byte that makes it invalid, not at its end.
const (
	utf8Accept UTF8State = iota // between characters
	utf8Tail1                   // one more 80-BF
	utf8Tail2                   // two more 80-BF
	utf8Tail3                   // three more 80-BF
	utf8E0                      // after E0: A0-BF, then one more
	utf8ED                      // after ED: 80-9F (no surrogates), then one more
	utf8F0                      // after F0: 90-BF, then two more
	utf8F4                      // after F4: 80-8F (at most U+10FFFF), then two more
	utf8Reject
	utf8States
)

var utf8Next [utf8States][256]UTF8State

func init() {
	for s := range utf8Next {
		for b := range utf8Next[s] {
			utf8Next[s][b] = utf8Reject
		}
	}
	set := func(s UTF8State, lo, hi int, next UTF8State) {
		for b := lo; b <= hi; b++ {
			utf8Next[s][b] = next
		}
	}
	set(utf8Accept, 0x00, 0x7f, utf8Accept)
	set(utf8Accept, 0xc2, 0xdf, utf8Tail1)
	set(utf8Accept, 0xe0, 0xe0, utf8E0)
	set(utf8Accept, 0xe1, 0xec, utf8Tail2)
	set(utf8Accept, 0xed, 0xed, utf8ED)
	set(utf8Accept, 0xee, 0xef, utf8Tail2)
	set(utf8Accept, 0xf0, 0xf0, utf8F0)
	set(utf8Accept, 0xf1, 0xf3, utf8Tail3)
	set(utf8Accept, 0xf4, 0xf4, utf8F4)
	set(utf8Tail1, 0x80, 0xbf, utf8Accept)
	set(utf8Tail2, 0x80, 0xbf, utf8Tail1)
	set(utf8Tail3, 0x80, 0xbf, utf8Tail2)
	set(utf8E0, 0xa0, 0xbf, utf8Tail1)
	set(utf8ED, 0x80, 0x9f, utf8Tail1)
	set(utf8F0, 0x90, 0xbf, utf8Tail2)
	set(utf8F4, 0x80, 0x8f, utf8Tail2)
}

// Valid reports whether p, following a piece that left state s, is still
// UTF-8 (possibly ending inside a character), and the state after it. A
// whole message is valid when the final state is the zero state.
func (s UTF8State) Valid(p []byte) (UTF8State, bool) {
	i := 0
	for i < len(p) {
		if s == utf8Accept {
			for i+8 <= len(p) && binary.LittleEndian.Uint64(p[i:])&0x8080808080808080 == 0 {
				i += 8
			}
			if i == len(p) {
				break
			}
		}
		s = utf8Next[s][p[i]]
		if s == utf8Reject {
			return s, false
		}
		i++
	}
	return s, true
}

// Complete reports whether s is between characters: a message that ends in
// this state ended on a character boundary.
func (s UTF8State) Complete() bool { return s == utf8Accept }
