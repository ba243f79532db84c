package rooms_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// sizeKind's messages write: "put K" stores K and answers "ok K"; "fill"
// puts 200 KiB values until a put fails; "grow" inserts 4 MiB in one
// statement; "toobig" inserts one blob over the length limit. Each of the
// last three reports its error and fails its event.
type sizeKind struct {
	mu   sync.Mutex
	errs map[string]error
}

type sizeRoom struct {
	rooms.Base
	k  *sizeKind
	st *rooms.State
}

func (k *sizeKind) kind() rooms.Kind {
	return rooms.Kind{Name: "size", New: func(st *rooms.State) rooms.Handler {
		return &sizeRoom{k: k, st: st}
	}}
}

func (k *sizeKind) reported(msg string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.errs[msg]
}

func (h *sizeRoom) Message(s *rooms.Sock, _ bool, data []byte) error {
	msg := string(data)
	if key, ok := strings.CutPrefix(msg, "put "); ok {
		if err := h.st.Storage.Put(key, []byte(key)); err != nil {
			return err
		}
		s.SendText("ok " + key)
		return nil
	}
	err := errors.New("no error")
	switch msg {
	case "fill":
		for i := 0; ; i++ {
			if err = h.st.Storage.Put(fmt.Sprintf("fill%d", i), make([]byte, 200<<10)); err != nil {
				break
			}
		}
	case "grow":
		_, err = h.st.Storage.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 64)
			INSERT INTO t SELECT zeroblob(65536) FROM c`)
	case "toobig":
		_, err = h.st.Storage.Exec(`INSERT INTO t VALUES (zeroblob(300000))`)
	}
	h.k.mu.Lock()
	h.k.errs[msg] = err
	h.k.mu.Unlock()
	return err
}

// Request answers what the room stored: each key asked for that is set,
// and the rows of t.
func (h *sizeRoom) Request(w http.ResponseWriter, req *http.Request) error {
	var got []string
	for _, key := range strings.Fields(req.URL.Query().Get("keys")) {
		_, ok, err := h.st.Storage.Get(key)
		if err != nil {
			return err
		}
		if ok {
			got = append(got, key)
		}
	}
	c, err := h.st.Storage.Exec(`SELECT count(*) AS n FROM t`)
	if err != nil {
		return err
	}
	row, err := c.One()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s; t has %d rows", strings.Join(got, " "), row["n"])
	return err
}

func (h *sizeRoom) Connect(c *rooms.Connect) error {
	_, err := h.st.Storage.Exec(`CREATE TABLE IF NOT EXISTS t (b)`)
	return err
}

// Events over the room's size limit fail alone: in one batch with events
// that write little, the event whose puts fill the room (one row a
// statement: SQLite, reaching its page limit there, rolls back the whole
// transaction), the one whose single statement writes far past the limit
// (SQLite rolls back that statement alone) and the one over the length
// limit each fail with den's limit error, and the others commit: no
// socket is closed with 1011, and their writes are there after a restart.
func TestSizeLimitFailsOnlyItsEvent(t *testing.T) {
	dir := t.TempDir()
	k := &sizeKind{errs: map[string]error{}}
	var commits atomic.Int32
	var holdNext atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	opts := storage.Options{Dir: dir, Synchronous: storage.SyncFull,
		Limits: storage.Limits{MaxDatabaseBytes: 1 << 20, MaxValueBytes: 256 << 10}}
	n := startNodeStore(t, opts, rooms.Config{Kinds: []rooms.Kind{k.kind()}, CommitHook: func(rooms.ID) error {
		commits.Add(1)
		if holdNext.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return nil
	}}, nil)
	a := n.dial(t, "/rooms/size/r")
	got := make(chan string, 16)
	barrier := pingBarrier(a)
	go func() {
		for {
			_, m, err := a.ReadMessage()
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(m)
		}
	}()
	expect := func(want string) {
		t.Helper()
		if m := recv(t, got, fmt.Sprintf("a never got %q", want)); m != want {
			t.Fatalf("a got %q, want %q", m, want)
		}
	}

	// The room's commit of "put hold" waits; what a sends meanwhile is
	// queued (its ping, answered, comes after it) and runs as one batch.
	before := commits.Load()
	holdNext.Store(true)
	send(t, a, "put hold")
	recv(t, entered, "the first batch never reached its commit")
	for _, m := range []string{"put a", "fill", "put b", "grow", "toobig", "put c"} {
		send(t, a, m)
	}
	barrier(t)
	letGo()
	for _, want := range []string{"ok hold", "ok a", "ok b", "ok c"} {
		expect(want)
	}
	if c := commits.Load() - before; c != 2 {
		t.Fatalf("%d commits, want 2: the events after the held one did not share a batch", c)
	}
	for msg, limit := range map[string]string{"fill": "database size", "grow": "database size", "toobig": "row size"} {
		var le *storage.LimitError
		if err := k.reported(msg); !errors.As(err, &le) || le.Limit != limit {
			t.Errorf("%s: the handler got %v, want a %s LimitError", msg, err, limit)
		}
	}
	// The socket is still open, and the room goes on.
	send(t, a, "put d")
	expect("ok d")
	if f := n.rt.Stats().CommitsFailed; f != 0 {
		t.Fatalf("%d commits failed", f)
	}

	n.stop()
	n = startNodeStore(t, opts, rooms.Config{Kinds: []rooms.Kind{k.kind()}}, nil)
	code, body := httpDo(t, http.MethodGet, n.url("/rooms/size/r?keys=hold+a+b+c+d+fill0"), "")
	if want := "hold a b c d; t has 0 rows"; code != http.StatusOK || body != want {
		t.Fatalf("after a restart the room has %d %q, want %q", code, body, want)
	}
}
