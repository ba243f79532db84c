package gateway

import (
	"net/http"

	"github.com/den-rooms/den/rooms"
)

// Runtime serves the gateway's rooms with den's rooms runtime.
func Runtime(rt *rooms.Runtime) Rooms { return runtimeRooms{rt} }

type runtimeRooms struct{ rt *rooms.Runtime }

var (
	_ Rooms             = runtimeRooms{}
	_ rooms.Socket      = (*Socket)(nil)
	_ rooms.JoinRequest = roomsJoin{}
)

func (a runtimeRooms) Join(j *Join) { a.rt.Join(j.Kind, j.Name, roomsJoin{j}) }

func (a runtimeRooms) Message(s *Socket, text bool, payload []byte) { a.rt.Message(s, text, payload) }

func (a runtimeRooms) Closed(s *Socket, code int, reason string, clean bool) {
	a.rt.Closed(s, code, reason, clean)
}

func (a runtimeRooms) ServeHTTP(w http.ResponseWriter, r *http.Request, kind, name string) {
	a.rt.ServeHTTP(w, r, kind, name)
}

// roomsJoin is a Join as the rooms runtime sees it.
type roomsJoin struct{ j *Join }

func (r roomsJoin) Request() *http.Request { return r.j.Request() }

func (r roomsJoin) Accept(v any) rooms.Socket {
	if s := r.j.AcceptValue(v); s != nil {
		return s
	}
	return nil
}

func (r roomsJoin) Refuse(status int, reason string) { r.j.Refuse(status, reason) }

func (r roomsJoin) Identity() *rooms.Identity {
	id, _ := r.j.Identity().(*rooms.Identity)
	return id
}

// RoomsBroadcast is the runtime's broadcaster (rooms.Config.Broadcast):
// the message is encoded once and queued on each event loop under one
// lock, as Broadcast does.
func RoomsBroadcast(to []rooms.Socket, text bool, payload []byte) {
	for _, s := range to {
		if _, ok := s.(*Socket); !ok {
			_ = s.Send(text, payload)
		}
	}
	broadcast(NewFrame(text, payload), len(to), func(i int) *Socket {
		s, _ := to[i].(*Socket)
		return s
	})
}
