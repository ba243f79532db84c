package gateway

import "net/http"

// Echo serves the built-in echo kind: every data message goes back to its
// sender unchanged, text as text and binary as binary. It stores nothing.
// Other kinds get 404 until the rooms runtime serves them.
type Echo struct{}

var _ Rooms = Echo{}

// Join accepts sockets for /rooms/echo/{name} and refuses others with 404.
func (Echo) Join(j *Join) {
	if j.Kind != "echo" {
		j.Refuse(http.StatusNotFound, "no such room kind")
		return
	}
	j.Accept()
}

// Message sends the message back.
func (Echo) Message(s *Socket, text bool, payload []byte) { _ = s.Send(text, payload) }

// Closed does nothing: echo keeps no state.
func (Echo) Closed(*Socket, int, string, bool) {}

// ServeHTTP answers 404: echo has no HTTP handler.
func (Echo) ServeHTTP(w http.ResponseWriter, r *http.Request, _, _ string) { http.NotFound(w, r) }
