package rooms

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"unicode"
	"unicode/utf8"
)

// Limits on a room's address, /rooms/{kind}/{name}.
const (
	MaxKindLen = 64
	MaxNameLen = 256
)

// ValidKind reports whether k can name a kind: 1 to MaxKindLen bytes of
// a-z, 0-9, '-' and '_'.
func ValidKind(k string) bool {
	if len(k) == 0 || len(k) > MaxKindLen {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidName reports whether n can name a room: 1 to MaxNameLen bytes of
// UTF-8 without control characters (C0, DEL or C1), and not "." or "..",
// which an HTTP path cannot carry as a segment: HTTP clients and routers
// resolve them away, so such a room could be joined but not reached by
// its HTTP routes or the admin API.
func ValidName(n string) bool {
	if len(n) == 0 || len(n) > MaxNameLen || !utf8.ValidString(n) || n == "." || n == ".." {
		return false
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ID names one room of a kind for ever: 32 bytes, printed as 64 hex
// digits. Rooms addressed by name get IDFromName; rooms made for one
// purpose get NewUniqueID and are reached by their ID.
type ID [32]byte

// IDFromName is the ID of kind's room called name: the same on every node
// and in every run.
func IDFromName(kind, name string) ID {
	h := sha256.New()
	h.Write([]byte("den room\x00"))
	// The kind's length first, so no kind and name run into another pair.
	h.Write(binary.AppendUvarint(nil, uint64(len(kind))))
	h.Write([]byte(kind))
	h.Write([]byte(name))
	var id ID
	h.Sum(id[:0])
	return id
}

// NewUniqueID is a random ID, distinct from every other and from every
// IDFromName.
func NewUniqueID() ID {
	var id ID
	_, _ = rand.Read(id[:])
	return id
}

// String prints the ID as hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ErrBadID is a string that is not a printed ID.
var ErrBadID = errors.New("rooms: not a room ID (64 hex digits)")

// ParseID reads an ID printed by String.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, ErrBadID
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, ErrBadID
	}
	return id, nil
}
