package builtin

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/den-rooms/den/rooms"
)

// Counter is the classic Durable Objects example: a durable number.
// POST /rooms/counter/{name}/increment answers {"value":N} once durable;
// GET /rooms/counter/{name} answers {"value":N}. Sockets get
// {"type":"count","value":N} on join and after every increment, and may
// send {"type":"increment"}.
var Counter = rooms.Kind{Name: "counter", New: func(st *rooms.State) rooms.Handler { return &counter{st: st} }}

type counter struct {
	rooms.Base
	st *rooms.State
}

func (c *counter) value() (int64, error) {
	b, ok, err := c.st.Storage.Get("value")
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(b), 10, 64)
}

func (c *counter) increment() (int64, error) {
	v, err := c.value()
	if err != nil {
		return 0, err
	}
	v++
	if err := c.st.Storage.Put("value", []byte(strconv.FormatInt(v, 10))); err != nil {
		return 0, err
	}
	c.st.Broadcast(true, countFrame(v))
	return v, nil
}

func countFrame(v int64) []byte {
	return marshal(map[string]any{"type": "count", "value": v})
}

func (c *counter) Connect(conn *rooms.Connect) error {
	v, err := c.value()
	if err != nil {
		return err
	}
	conn.Accept().Send(true, countFrame(v))
	return nil
}

func (c *counter) Message(s *rooms.Sock, text bool, data []byte) error {
	var m struct{ Type string }
	if !text || json.Unmarshal(data, &m) != nil || m.Type != "increment" {
		s.Send(true, errorFrame(`send {"type":"increment"}`))
		return nil
	}
	_, err := c.increment()
	return err
}

func (c *counter) Request(w http.ResponseWriter, r *http.Request) error {
	switch sub := subpath(c.st, r); {
	case sub == "/increment" && r.Method == http.MethodPost:
		v, err := c.increment()
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]int64{"value": v})
	case (sub == "" || sub == "/") && r.Method == http.MethodGet:
		v, err := c.value()
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]int64{"value": v})
	case sub == "/increment" || sub == "" || sub == "/":
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	default:
		http.NotFound(w, r)
	}
	return nil
}
