package rooms_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
	"github.com/den-rooms/den/storage"
)

// alarmed is a kind that stores nothing but what POST .../alarm sets: an
// alarm a day ahead. Any other request holds the room until release lets
// go, when release is not nil.
type alarmed struct {
	rooms.Base
	st      *rooms.State
	entered chan struct{}
	release chan struct{}
}

func alarmedKind(entered, release chan struct{}) rooms.Kind {
	return rooms.Kind{Name: "alarmed", New: func(st *rooms.State) rooms.Handler {
		return &alarmed{st: st, entered: entered, release: release}
	}}
}

func (a *alarmed) Request(w http.ResponseWriter, req *http.Request) error {
	if strings.HasSuffix(req.URL.Path, "/alarm") {
		return a.st.SetAlarm(a.st.Now().Add(24 * time.Hour))
	}
	if a.release != nil {
		a.entered <- struct{}{}
		<-a.release
	}
	return nil
}

// reclaimNode is a node serving the built-in kinds and alarmed on a fake
// clock, with storage's options opts (Dir is set here) and cfg's
// KeepEmptyRooms; wrap, if not nil, wraps the gateway's Rooms.
func reclaimNode(t *testing.T, opts storage.Options, keep bool, alarmedK rooms.Kind, wrap func(gateway.Rooms) gateway.Rooms) (*node, *clock.Fake) {
	t.Helper()
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	opts.Dir = t.TempDir()
	n := startNodeStore(t, opts, rooms.Config{
		Kinds: append(builtin.Kinds(), alarmedK), Clock: fake, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		HibernateAfter: 10 * time.Second, EvictAfter: time.Minute, KeepEmptyRooms: keep,
	}, wrap)
	return n, fake
}

// emptyHistory is the history frame of a chat room without messages.
const emptyHistory = `{"messages":[],"type":"history"}`

// roomFile is where kind's room called name keeps its database in dir.
func roomFile(dir, kind, name string) string {
	id := rooms.IDFromName(kind, name).String()
	return filepath.Join(dir, "rooms", id[:2], id+".db")
}

// evict moves the clock on until kind's room called name has left
// memory, and returns its state then: evicted, or absent once reclaimed.
func evict(t *testing.T, n *node, fake *clock.Fake, kind, name string) string {
	t.Helper()
	var s string
	waitFor(t, kind+"/"+name+" to leave memory", func() bool {
		fake.Advance(11 * time.Second)
		s = roomState(t, n, kind, name)
		return s != "active" && s != "deleting"
	})
	return s
}

// adminInfo is what GET /admin/rooms/{kind}/{name} answers.
func adminInfo(t *testing.T, n *node, kind, name string) rooms.RoomInfo {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/admin/rooms/"+kind+"/"+name, nil)
	req.Header.Set("Authorization", "Bearer t")
	rec := httptest.NewRecorder()
	n.rt.Admin("t").ServeHTTP(rec, req)
	var info rooms.RoomInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &info); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("admin API: %d %s (%v)", rec.Code, rec.Body, err)
	}
	return info
}

// checkGone fails t unless the room at path left no file, and its
// store no record of it.
func checkGone(t *testing.T, store *storage.Store, path string) {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm", path + ".new"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there (%v)", filepath.Base(p), err)
		}
	}
	id := strings.TrimSuffix(filepath.Base(path), ".db")
	if _, ok, err := store.Record(id); ok || err != nil {
		t.Errorf("node.db still records the room (%v)", err)
	}
}

// joinChat joins chat room name as user and reads the history and join
// frames, returning the history's.
func joinChat(t *testing.T, n *node, name, user string) (*websocket.Conn, string) {
	t.Helper()
	c := n.dial(t, "/rooms/chat/"+name+"?user="+user)
	history := read(t, c)
	if join := read(t, c); !strings.Contains(join, `"type":"join"`) {
		t.Fatalf("after the history, %q", join)
	}
	return c, history
}

// leave closes c and waits for its room to handle the close.
func leave(t *testing.T, n *node, c *websocket.Conn, kind, name string) {
	t.Helper()
	c.Close()
	waitFor(t, "the close to be handled", func() bool {
		info, err := n.rt.Info(kind, name)
		return err == nil && info.Sockets == 0
	})
}

// A room evicted with nothing stored is deleted: its file, WAL and
// record go, the admin API says absent, and a join makes it anew. A room
// that stores anything, a message (an anonymous user's too), a scheduled
// one or an alarm, is kept. An anonymous visit stores nothing.
func TestEvictedEmptyRoomIsReclaimed(t *testing.T) {
	n, fake := reclaimNode(t, storage.Options{}, false, alarmedKind(nil, nil), nil)
	cases := []struct {
		kind, name string
		use        func(t *testing.T)
		want       string
	}{
		{"chat", "quiet", func(t *testing.T) {
			c, _ := joinChat(t, n, "quiet", "ann")
			leave(t, n, c, "chat", "quiet")
		}, "absent"},
		{"chat", "read-only", func(t *testing.T) {
			if code, body := httpDo(t, "GET", n.url("/rooms/chat/read-only/messages"), ""); code != 200 || body != "[]" {
				t.Fatalf("GET messages: %d %s", code, body)
			}
		}, "absent"},
		{"chat", "talked", func(t *testing.T) {
			c, _ := joinChat(t, n, "talked", "ann")
			send(t, c, `{"type":"message","text":"hello"}`)
			if got := read(t, c); !strings.Contains(got, `"text":"hello"`) {
				t.Fatalf("message: %q", got)
			}
			leave(t, n, c, "chat", "talked")
		}, "evicted"},
		{"chat", "scheduled", func(t *testing.T) {
			c, _ := joinChat(t, n, "scheduled", "ann")
			send(t, c, `{"type":"schedule","delay_ms":86400000,"text":"tomorrow"}`)
			leave(t, n, c, "chat", "scheduled")
		}, "evicted"},
		{"chat", "anonymous", func(t *testing.T) {
			c := n.dial(t, "/rooms/chat/anonymous")
			read(t, c)
			read(t, c)
			leave(t, n, c, "chat", "anonymous")
		}, "absent"},
		{"chat", "anonymous-talked", func(t *testing.T) {
			c := n.dial(t, "/rooms/chat/anonymous-talked")
			read(t, c)
			read(t, c)
			send(t, c, `{"type":"message","text":"hello"}`)
			if got := read(t, c); !strings.Contains(got, `"user":"anon-1"`) {
				t.Fatalf("message: %q", got)
			}
			leave(t, n, c, "chat", "anonymous-talked")
		}, "evicted"},
		{"alarmed", "set", func(t *testing.T) {
			if code, _ := httpDo(t, "POST", n.url("/rooms/alarmed/set/alarm"), ""); code != 200 {
				t.Fatalf("POST alarm: %d", code)
			}
		}, "evicted"},
	}
	for _, tc := range cases {
		tc.use(t)
		path := roomFile(n.dir, tc.kind, tc.name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s/%s: no file while awake: %v", tc.kind, tc.name, err)
		}
		if got := evict(t, n, fake, tc.kind, tc.name); got != tc.want {
			t.Errorf("%s/%s: %s after its eviction, want %s", tc.kind, tc.name, got, tc.want)
		}
		info := adminInfo(t, n, tc.kind, tc.name)
		if info.State != tc.want {
			t.Errorf("%s/%s: the admin API says %s, want %s", tc.kind, tc.name, info.State, tc.want)
		}
		if tc.want == "absent" {
			checkGone(t, n.store, path)
			if info.StorageBytes != 0 {
				t.Errorf("%s/%s: the admin API counts %d bytes of storage", tc.kind, tc.name, info.StorageBytes)
			}
		} else if _, err := os.Stat(path); err != nil {
			t.Errorf("%s/%s: kept, but its file is gone: %v", tc.kind, tc.name, err)
		}
	}
	if st := n.rt.Stats(); st.Rooms != 0 || st.Hibernated != 0 || st.Evictions != int64(len(cases)) || st.Reclaims != 3 {
		t.Errorf("stats: %+v, want no room in memory, %d evictions, 3 reclaims", st, len(cases))
	}
	if h := n.store.OpenHandles(); h != 0 {
		t.Errorf("%d room databases open", h)
	}
	recs, err := n.store.Rooms("")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Name == "quiet" || rec.Name == "read-only" || rec.Name == "anonymous" {
			t.Errorf("node.db lists reclaimed room %s/%s", rec.Kind, rec.Name)
		}
	}

	// A join makes the room anew, empty, and it works as any.
	c, history := joinChat(t, n, "quiet", "bob")
	if history != emptyHistory {
		t.Fatalf("the room made anew has history %s", history)
	}
	send(t, c, `{"type":"message","text":"first"}`)
	if got := read(t, c); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, `"text":"first"`) {
		t.Fatalf("first message of the room made anew: %q", got)
	}
	if s := roomState(t, n, "chat", "quiet"); s != "active" {
		t.Fatalf("the room made anew is %s", s)
	}
	leave(t, n, c, "chat", "quiet")
	if got := evict(t, n, fake, "chat", "quiet"); got != "evicted" {
		t.Fatalf("with a message stored, the room is %s after its eviction", got)
	}
}

// With KeepEmptyRooms, an evicted room keeps its file and record though
// it stores nothing, as den did before it reclaimed them.
func TestKeepEmptyRooms(t *testing.T) {
	n, fake := reclaimNode(t, storage.Options{}, true, alarmedKind(nil, nil), nil)
	c, _ := joinChat(t, n, "quiet", "ann")
	leave(t, n, c, "chat", "quiet")
	if got := evict(t, n, fake, "chat", "quiet"); got != "evicted" {
		t.Fatalf("%s after its eviction, want evicted", got)
	}
	path := roomFile(n.dir, "chat", "quiet")
	for _, p := range []string{path, path + "-wal"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", filepath.Base(p), err)
		}
	}
	if st := n.rt.Stats(); st.Evictions != 1 || st.Reclaims != 0 {
		t.Errorf("stats: %+v, want 1 eviction, no reclaim", st)
	}
}

// joinHook runs after(kind, name) once the runtime has taken a join.
type joinHook struct {
	gateway.Rooms
	after func(kind, name string)
}

func (h joinHook) Join(j *gateway.Join) {
	h.Rooms.Join(j)
	h.after(j.Kind, j.Name)
}

// reclaimWaiting reports whether a room's reclaim waits for a database
// handle from storage's pool.
func reclaimWaiting() bool {
	buf := make([]byte, 1<<20)
	for n := runtime.Stack(buf, true); ; n = runtime.Stack(buf, true) {
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("rooms.(*room).reclaim(")) && bytes.Contains(g, []byte("storage.(*Store).reserve(")) {
			return true
		}
	}
	return false
}

// A join that comes while an empty room is reclaimed waits for it and
// gets the room made anew: no error, and what it sends is kept. The
// reclaim is held midway, before the deletion, by a pool of one handle
// that another room keeps inside a transaction.
func TestJoinDuringReclaim(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	joined := make(chan string, 4)
	n, fake := reclaimNode(t, storage.Options{MaxOpen: 1}, false, alarmedKind(entered, release),
		func(r gateway.Rooms) gateway.Rooms {
			return joinHook{r, func(kind, name string) { joined <- kind + "/" + name }}
		})
	c, _ := joinChat(t, n, "quiet", "ann")
	<-joined
	leave(t, n, c, "chat", "quiet")

	// The other room takes the pool's one handle and keeps it.
	held := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, n.url("/rooms/alarmed/holder"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	recv(t, entered, "the holding request never ran")
	waitFor(t, "the reclaim to wait for a handle", func() bool {
		fake.Advance(11 * time.Second)
		return reclaimWaiting()
	})

	type dialed struct {
		c   *websocket.Conn
		err error
	}
	dials := make(chan dialed, 1)
	go func() {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/quiet?user=bob", nil)
		dials <- dialed{c, err}
	}()
	if got := recv(t, joined, "the join never reached the runtime"); got != "chat/quiet" {
		t.Fatalf("joined %s", got)
	}
	close(release)
	if code := <-held; code != 200 {
		t.Fatalf("the holding request: %d", code)
	}
	d := <-dials
	if d.err != nil {
		t.Fatalf("a join during the reclaim: %v", d.err)
	}
	defer d.c.Close()
	if history := read(t, d.c); history != emptyHistory {
		t.Fatalf("history %s", history)
	}
	read(t, d.c)
	send(t, d.c, `{"type":"message","text":"kept"}`)
	if got := read(t, d.c); !strings.Contains(got, `"id":1,`) {
		t.Fatalf("message: %q", got)
	}
	if st := n.rt.Stats(); st.Reclaims != 1 {
		t.Errorf("stats: %+v, want the room reclaimed once", st)
	}
	code, body := httpDo(t, "GET", n.url("/rooms/chat/quiet/messages"), "")
	if code != 200 || !strings.Contains(body, `"text":"kept"`) {
		t.Fatalf("history after the reclaim: %d %s", code, body)
	}
	if _, ok, err := n.store.Record(rooms.IDFromName("chat", "quiet").String()); !ok || err != nil {
		t.Fatalf("node.db has no record of the room made anew (%v)", err)
	}
}

// TestReclaimCrashChild is den reclaiming an empty chat room, killed by
// strace at the unlink of the room's database, where
// TestCrashDuringReclaim says.
func TestReclaimCrashChild(t *testing.T) {
	dir := os.Getenv("DEN_RECLAIM_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestCrashDuringReclaim")
	}
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now())
	rt, err := rooms.New(rooms.Config{Store: store, Kinds: builtin.Kinds(), Clock: fake})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	rt.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/rooms/chat/c/messages", nil), "chat", "c")
	if rec.Code != 200 {
		t.Fatalf("GET messages: %d", rec.Code)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		fake.Advance(11 * time.Second)
	}
	t.Fatal("not killed")
}

// den killed as it reclaims an empty room, its deletion recorded and its
// database not yet unlinked, finishes the deletion as it starts again:
// no file or record of the room is left, and a join makes it anew.
func TestCrashDuringReclaim(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := roomFile(dir, "chat", "c")
	cmd := exec.Command(strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unlinkat",
		"-e", "inject=unlinkat:signal=SIGKILL", "-P", path, exe, "-test.run=^TestReclaimCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DEN_RECLAIM_CRASH_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "not killed") {
		t.Fatalf("den was not killed at the unlink: %v %s", err, out)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("den was killed after the unlink it was meant to die at: %v", err)
	}

	n := startNode(t, dir, rooms.Config{})
	if err := n.store.UnfinishedDeletions(); err != nil {
		t.Fatalf("the reclaim was not finished at the start: %v", err)
	}
	checkGone(t, n.store, path)
	if s := roomState(t, n, "chat", "c"); s != "absent" {
		t.Fatalf("after the restart the room is %s, want absent", s)
	}
	c, history := joinChat(t, n, "c", "ann")
	if history != emptyHistory {
		t.Fatalf("history %s", history)
	}
	send(t, c, `{"type":"message","text":"after"}`)
	if got := read(t, c); !strings.Contains(got, `"id":1,`) {
		t.Fatalf("message: %q", got)
	}
}

// Anonymous users never share a name, though a room no longer stores its
// count of them at each join: one who joined before the room slept keeps
// its number (the attachment says it), and one whose message the history
// holds keeps it after every member left and the room left memory.
func TestAnonymousNamesStayUnique(t *testing.T) {
	n, fake := reclaimNode(t, storage.Options{}, false, alarmedKind(nil, nil), nil)
	joinAnon := func(name string) (*websocket.Conn, string) {
		t.Helper()
		c := n.dial(t, "/rooms/chat/"+name)
		read(t, c)
		var join struct{ User string }
		if err := json.Unmarshal([]byte(read(t, c)), &join); err != nil {
			t.Fatal(err)
		}
		return c, join.User
	}

	a, first := joinAnon("anon-sleep")
	sleepUntil(t, n, fake, "chat", "anon-sleep", "hibernated")
	b, second := joinAnon("anon-sleep")
	if first == second {
		t.Errorf("an anonymous user who joined after the room slept is %s, as the one before it", second)
	}
	a.Close()
	leave(t, n, b, "chat", "anon-sleep")

	c, poster := joinAnon("anon-history")
	send(t, c, `{"type":"message","text":"hello"}`)
	read(t, c)
	leave(t, n, c, "chat", "anon-history")
	if got := evict(t, n, fake, "chat", "anon-history"); got != "evicted" {
		t.Fatalf("a room with a message is %s after its eviction, want evicted", got)
	}
	if _, later := joinAnon("anon-history"); later == poster {
		t.Errorf("an anonymous user joining later is %s, as the one whose message the history holds", later)
	}
}
