package rooms

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// RoomInfo is what the admin API says of a room.
type RoomInfo struct {
	ID           string `json:"id"`
	Kind         string `json:"kind"`
	Name         string `json:"name"`
	State        string `json:"state"` // active, hibernated (asleep, sockets open), evicted (on disk only), deleting or absent
	Sockets      int    `json:"sockets"`
	Alarm        *int64 `json:"alarm"` // the pending alarm, epoch milliseconds; null if none (or while it fires)
	StorageBytes int64  `json:"storage_bytes"`
}

// Info describes kind's room called name.
func (rt *Runtime) Info(kind, name string) (RoomInfo, error) {
	id := IDFromName(kind, name)
	info := RoomInfo{ID: id.String(), Kind: kind, Name: name, State: "absent"}
	rt.mu.Lock()
	r := rt.rooms[id]
	gone := rt.gone[id] != nil
	rt.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		awake, dead := r.running, r.dead
		r.mu.Unlock()
		info.Sockets = int(r.nsocks.Load())
		// Asleep without sockets, a room in memory only holds a close or
		// an alarm for a wake (past --max-active-rooms, or after a failed
		// one): it is reported as evicted, as it is once that is done.
		switch {
		case dead:
		case awake:
			info.State = "active"
		case info.Sockets > 0:
			info.State = "hibernated"
		}
	}
	if at, ok := rt.alarms.get(id); ok {
		ms := at.UnixMilli()
		info.Alarm = &ms
	}
	_, ok, err := rt.store.Record(info.ID)
	if err != nil {
		return info, err
	}
	if ok && info.State == "absent" {
		info.State = "evicted"
	}
	if ok {
		info.StorageBytes = rt.store.Bytes(info.ID)
	}
	// A deletion that failed is tried again before the room next opens;
	// until then the room is neither in use nor gone.
	if gone || rt.store.Deleting(info.ID) {
		info.State = "deleting"
	}
	return info, nil
}

// Delete closes the room's sockets with 1000 and deletes its storage. It
// reports false if the room never existed.
func (rt *Runtime) Delete(kind, name string) (existed bool, err error) {
	id := IDFromName(kind, name)
	rt.mu.Lock()
	if d := rt.gone[id]; d != nil {
		// Being deleted by another call: done, and answered, as it is.
		rt.mu.Unlock()
		<-d.done
		return d.existed, d.err
	}
	// While it is deleted, the room cannot be woken again.
	d := &deletion{done: make(chan struct{})}
	rt.gone[id] = d
	r := rt.rooms[id]
	rt.mu.Unlock()
	defer func() {
		d.existed, d.err = existed, err
		rt.mu.Lock()
		delete(rt.gone, id)
		rt.mu.Unlock()
		close(d.done)
	}()
	// Last, while the id is still held: an alarm the scheduler has just
	// taken from its heap is turned away, where after the deletion it
	// would make the room anew.
	defer rt.alarms.drop(id)
	if r != nil {
		ev := &event{kind: evDelete, done: make(chan struct{})}
		switch err := r.enqueue(ev); {
		case err == nil:
			// The room wakes if it sleeps, closes its sockets and leaves.
			<-ev.done
		case errors.Is(err, errStopped):
			// Shut down: its goroutine ends on its own, and then its
			// storage handle is closed.
			rt.serving.Wait()
		}
	}
	if _, ok, err := rt.store.Record(id.String()); err != nil || !ok {
		return r != nil, err
	}
	return true, rt.store.Delete(id.String())
}

// deletion is a Delete in flight: a Delete of the same room that comes
// meanwhile waits for done and answers with existed and err.
type deletion struct {
	done    chan struct{}
	existed bool
	err     error
}

// statelessRooms returns the rooms of stateless kinds in memory, of kind
// if it is not empty, by kind and name.
func (rt *Runtime) statelessRooms(kind string) []*room {
	rt.mu.Lock()
	var rs []*room
	for _, r := range rt.rooms {
		if r.kind.Stateless && (kind == "" || r.kind.Name == kind) {
			rs = append(rs, r)
		}
	}
	rt.mu.Unlock()
	slices.SortFunc(rs, func(a, b *room) int {
		return cmp.Or(cmp.Compare(a.kind.Name, b.kind.Name), cmp.Compare(a.name, b.name))
	})
	return rs
}

// Admin serves the admin API under /admin/rooms to requests that carry
// Authorization: Bearer token. token must not be empty.
func (rt *Runtime) Admin(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/rooms", func(w http.ResponseWriter, r *http.Request) {
		kind := r.URL.Query().Get("kind")
		recs, err := rt.store.Rooms(kind)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := make([]RoomInfo, 0, len(recs))
		for _, rec := range recs {
			info, err := rt.Info(rec.Kind, rec.Name)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out = append(out, info)
		}
		// A stateless kind's rooms, which node.db does not record, while
		// they are in memory.
		for _, m := range rt.statelessRooms(kind) {
			info, err := rt.Info(m.kind.Name, m.name)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if info.State != "absent" {
				out = append(out, info)
			}
		}
		writeAdmin(w, out)
	})
	mux.HandleFunc("GET /admin/rooms/{kind}/{name}", func(w http.ResponseWriter, r *http.Request) {
		kind, name := r.PathValue("kind"), r.PathValue("name")
		if !ValidName(name) {
			http.NotFound(w, r)
			return
		}
		info, err := rt.Info(kind, name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// A kind taken out of the node's configuration leaves its rooms
		// in node.db: the list shows them and DELETE removes them, so
		// they are found here too. Other names of such a kind name no room.
		if rt.kinds[kind] == nil && info.State == "absent" {
			http.NotFound(w, r)
			return
		}
		writeAdmin(w, info)
	})
	mux.HandleFunc("DELETE /admin/rooms/{kind}/{name}", func(w http.ResponseWriter, r *http.Request) {
		ok, err := rt.Delete(r.PathValue("kind"), r.PathValue("name"))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.NotFound(w, r)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The scheme's case does not matter (RFC 9110 §11.1), nor how many
		// spaces or tabs follow it (RFC 6750 §2.1); the token's case does.
		f := strings.Fields(r.Header.Get("Authorization"))
		if token == "" || len(f) != 2 || !strings.EqualFold(f[0], "Bearer") || subtle.ConstantTimeCompare([]byte(f[1]), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="den admin"`)
			http.Error(w, "admin token required", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeAdmin(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
