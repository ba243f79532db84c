package gateway

import (
	"net/url"
	"strings"
	"testing"

	"github.com/den-rooms/den/rooms"
)

// FuzzRoomPath splits arbitrary request targets, as clients send them: no
// panic, only a valid kind and name accepted, and a room's own path,
// escaped, splits back to that room.
func FuzzRoomPath(f *testing.F) {
	f.Add("/rooms/chat/lobby")
	f.Add("/rooms/chat/a%2Fb/messages?limit=5")
	f.Add("http://den/rooms/echo/x?token=t")
	f.Add("/rooms/echo/%2E%2E")
	f.Add("/rooms/echo/%zz")
	f.Add("/rooms/Echo/x")
	f.Add("/rooms/echo/caf%C3%A9/")
	f.Fuzz(func(t *testing.T, target string) {
		kind, name, rest, err := roomPath(target)
		if err != nil {
			return
		}
		if !rooms.ValidKind(kind) || !rooms.ValidName(name) {
			t.Fatalf("%q: accepted kind %q, name %q", target, kind, name)
		}
		if rest != "" && !strings.HasPrefix(rest, "/") {
			t.Fatalf("%q: rest %q", target, rest)
		}
		own := "/rooms/" + url.PathEscape(kind) + "/" + url.PathEscape(name)
		if k, n, r, err := roomPath(own); err != nil || k != kind || n != name || r != "" {
			t.Fatalf("%q: %q gives %q %q %q %v", target, own, k, n, r, err)
		}
	})
}
