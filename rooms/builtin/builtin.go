// Package builtin holds the room kinds den ships: echo, chat and counter.
// Their wire protocols are public API (see DESIGN.md, "Built-in room
// kinds").
package builtin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/den-rooms/den/rooms"
)

// Kinds are every built-in kind.
func Kinds() []rooms.Kind { return []rooms.Kind{Echo, Chat, Counter} }

// Echo sends every data message back to its sender, text as text and
// binary as binary. It stores nothing.
var Echo = rooms.Kind{Name: "echo", Stateless: true, New: func(*rooms.State) rooms.Handler { return echo{} }}

type echo struct{ rooms.Base }

func (echo) Message(s *rooms.Sock, text bool, data []byte) error {
	s.Send(text, data)
	return nil
}

// subpath is what follows the room's own path in a request.
func subpath(st *rooms.State, r *http.Request) string {
	return strings.TrimPrefix(r.URL.Path, "/rooms/"+st.Kind+"/"+st.Name)
}

func marshal(v any) []byte {
	// Without Go's HTML escaping, which writes each <, > and & as six
	// bytes: a frame is read by a client's JSON parser, not pasted into
	// a page.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only den's own types are marshalled here.
		panic(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(marshal(v), '\n'))
}

// errorFrame is what an invalid message gets back.
func errorFrame(reason string) []byte {
	return marshal(map[string]string{"type": "error", "error": reason})
}
