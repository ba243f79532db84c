package rooms_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// closeLogKind numbers the objects its constructor builds and logs the
// closes each one's handler sees. A message is stored, then answered; a
// message "defer" also defers work that logs itself, and so does Error
// once errorDefers is set.
type closeLogKind struct {
	built atomic.Int32
	mu    sync.Mutex
	log   []string
	// lease, once set, is put under an older epoch than the room's as the
	// next commit goes: the node has lost the room, and the batch after
	// that one cannot begin.
	lease       atomic.Pointer[storage.Room]
	errorDefers atomic.Bool
}

type closeLog struct {
	rooms.Base
	k   *closeLogKind
	obj int32
	st  *rooms.State
}

func (k *closeLogKind) kind() rooms.Kind {
	return rooms.Kind{Name: "closelog", New: func(st *rooms.State) rooms.Handler {
		return &closeLog{k: k, obj: k.built.Add(1), st: st}
	}}
}

// commitHook loses the room's lease, if lease is set, once.
func (k *closeLogKind) commitHook(rooms.ID) error {
	if h := k.lease.Swap(nil); h != nil {
		h.SetEpoch(1)
	}
	return nil
}

func (k *closeLogKind) logf(format string, args ...any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log = append(k.log, fmt.Sprintf(format, args...))
}

func (k *closeLogKind) closes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.log)
}

func (c *closeLog) Message(s *rooms.Sock, _ bool, data []byte) error {
	if err := c.st.Storage.Put("last", data); err != nil {
		return err
	}
	if string(data) == "defer" {
		c.st.Defer(func() error {
			c.k.logf("object %d: deferred", c.obj)
			return nil
		})
	}
	s.SendText("ok")
	return nil
}

func (c *closeLog) Close(_ *rooms.Sock, code int, _ string, _ bool) error {
	c.k.logf("object %d: close %d", c.obj, code)
	return nil
}

func (c *closeLog) Error(_ *rooms.Sock, err error) {
	if c.k.errorDefers.Load() {
		c.st.Defer(func() error {
			c.k.logf("object %d: Error's deferred", c.obj)
			return nil
		})
	}
}

func (c *closeLog) Request(w http.ResponseWriter, _ *http.Request) error {
	v, _, err := c.st.Storage.Get("last")
	if err != nil {
		return err
	}
	_, err = w.Write(v)
	return err
}

// A commit that fails closes the room's sockets with 1011, and each still
// gets its one close event: the rebuilt object's Close, as a woken
// object's for sockets it never saw join. A message a socket sent while
// the commit was failing is dropped, as its client is told with 1011.
func TestFailedCommitSocketsGetCloseEvents(t *testing.T) {
	k := &closeLogKind{}
	var failNext atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{k.kind()}, CommitHook: func(rooms.ID) error {
		if failNext.CompareAndSwap(true, false) {
			close(entered)
			<-release
			return errors.New("injected disk failure")
		}
		return nil
	}})
	a := n.dial(t, "/rooms/closelog/r")
	b := n.dial(t, "/rooms/closelog/r")
	send(t, a, "one")
	if got := read(t, a); got != "ok" {
		t.Fatalf("got %q", got)
	}
	failNext.Store(true)
	send(t, a, "two")
	recv(t, entered, "the batch never reached its commit")
	// b's frames are read in order: once its ping is answered, the
	// gateway has handed the room the message before it.
	barrier := pingBarrier(b)
	bDone := make(chan error, 1)
	go func() {
		_, m, err := b.ReadMessage()
		if err == nil {
			err = fmt.Errorf("b got %q before its close", m)
		}
		bDone <- err
	}()
	send(t, b, "late")
	barrier(t)
	letGo()
	expectOnly1011(t, a)
	var ce *websocket.CloseError
	if err := recv(t, bDone, "b not closed"); !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("b: %v, want close 1011", err)
	}
	if !eventually(10*time.Second, func() bool { return len(k.closes()) >= 2 }) {
		t.Fatalf("the sockets a failed commit closed got close events %q, want one each", k.closes())
	}
	want := []string{"object 2: close 1011", "object 2: close 1011"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("close events %q, want %q", got, want)
	}
	if code, body := httpDo(t, http.MethodGet, n.url("/rooms/closelog/r"), ""); code != http.StatusOK || body != "one" {
		t.Fatalf("stored after the failed commit: %d %q, want one (b's late message dropped)", code, body)
	}
}

// A batch whose transaction cannot even begin (here the handle lost the
// room to a newer epoch, as a node does whose lease another took) fails
// as a failed commit does, but none of its handlers ran: a close in it is
// still owed. It goes with the room's next batch, once storage works.
func TestFailedBeginKeepsItsCloses(t *testing.T) {
	n, _, k, h, a := failBegin(t)
	b := n.dial(t, "/rooms/closelog/r")
	send(t, b, "one")
	if got := read(t, b); got != "ok" {
		t.Fatalf("got %q", got)
	}
	h.SetEpoch(1)
	closeAndFail(t, n, a)
	h.SetEpoch(2)
	// b answers the 1011: its close and a's held one run on the rebuilt
	// object.
	expectOnly1011(t, b)
	if !eventually(10*time.Second, func() bool { return len(k.closes()) >= 2 }) {
		t.Fatalf("close events %q: a's, in the batch that could not begin, never came", k.closes())
	}
	want := []string{"object 2: close 1000", "object 2: close 1011"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("close events %q, want %q", got, want)
	}
}

// Deferred work in a batch whose transaction could not begin never ran:
// it is held as the batch's closes are, and runs, once, with the room's
// next batch.
func TestFailedBeginKeepsItsDeferredWork(t *testing.T) {
	n, _, k, h, a := failBegin(t)
	k.lease.Store(h)
	send(t, a, "defer")
	if got := read(t, a); got != "ok" {
		t.Fatalf("got %q", got)
	}
	if !eventually(10*time.Second, func() bool { return n.rt.Stats().CommitsFailed == 1 }) {
		t.Fatal("the deferred work's batch did not fail")
	}
	h.SetEpoch(2)
	// a answers the 1011: its close is the room's next batch.
	expectOnly1011(t, a)
	if !eventually(10*time.Second, func() bool { return len(k.closes()) >= 2 }) {
		t.Fatalf("events %q: the deferred work, in the batch that could not begin, never ran", k.closes())
	}
	// The work is object 1's, which deferred it; the close is the rebuilt
	// object's.
	want := []string{"object 1: deferred", "object 2: close 1011"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// Deferred work whose batch failed to commit ran: it is not run again.
func TestFailedCommitRunsDeferredWorkOnce(t *testing.T) {
	k := &closeLogKind{}
	// Counts commits down: the one that takes it from 0 to -1 fails.
	var fail atomic.Int32
	fail.Store(-1)
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{k.kind()}, CommitHook: func(rooms.ID) error {
		if fail.Add(-1) == -1 {
			return errors.New("injected disk failure")
		}
		return nil
	}})
	a := n.dial(t, "/rooms/closelog/r")
	// The message's commit goes, the deferred work's fails.
	fail.Store(1)
	send(t, a, "defer")
	if got := read(t, a); got != "ok" {
		t.Fatalf("got %q", got)
	}
	expectOnly1011(t, a)
	if !eventually(10*time.Second, func() bool { return len(k.closes()) >= 2 }) {
		t.Fatalf("events %q, want the deferred work's and a's close", k.closes())
	}
	// A last batch, after all the room had queued: a second run of the
	// work would have come before it.
	b := n.dial(t, "/rooms/closelog/r")
	send(t, b, "done")
	if got := read(t, b); got != "ok" {
		t.Fatalf("got %q", got)
	}
	want := []string{"object 1: deferred", "object 2: close 1011"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// What Error defers after a batch that could not begin is held with the
// batch's closes: queued at once, it could not begin either, and Error
// would defer again, in a loop that kept the room from ever sleeping.
func TestFailedBeginHoldsWhatErrorDefers(t *testing.T) {
	n, fake, k, h, a := failBegin(t)
	k.errorDefers.Store(true)
	h.SetEpoch(1)
	closeAndFail(t, n, a)
	if !eventually(10*time.Second, func() bool {
		fake.Advance(11 * time.Second)
		return n.rt.Stats().Hibernations >= 1
	}) {
		t.Fatalf("the room never slept (%d failed batches)", n.rt.Stats().CommitsFailed)
	}
	h.SetEpoch(2)
	// Each wake that failed meanwhile left one more; a's close comes once.
	ran := func(suffix string) int {
		return len(slices.DeleteFunc(k.closes(), func(e string) bool { return !strings.HasSuffix(e, suffix) }))
	}
	if !eventually(10*time.Second, func() bool {
		fake.Advance(11 * time.Second)
		return ran(": close 1000") > 0 && ran(": Error's deferred") > 0
	}) {
		t.Fatalf("events %q: a's close or what Error deferred never ran", k.closes())
	}
	if ran(": close 1000") != 1 {
		t.Fatalf("events %q: a's close more than once", k.closes())
	}
}

// With nothing more for the room to do, the close a batch that could not
// begin held comes at the room's next wake, after it sleeps.
func TestFailedBeginCloseComesAtTheNextWake(t *testing.T) {
	n, fake, k, h, a := failBegin(t)
	h.SetEpoch(1)
	closeAndFail(t, n, a)
	h.SetEpoch(2)
	if !eventually(10*time.Second, func() bool {
		fake.Advance(11 * time.Second)
		return len(k.closes()) >= 1
	}) {
		t.Fatal("a's close, in the batch that could not begin, never came")
	}
	want := []string{"object 3: close 1000"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("close events %q, want %q", got, want)
	}
}

// A node shutting down runs the close a batch that could not begin held
// in a room still awake with nothing queued: shutdown lets rooms finish
// their events, and the room would not wake again in this process.
func TestShutdownRunsHeldCloseOfAwakeRoom(t *testing.T) {
	n, _, k, h, a := failBegin(t)
	h.SetEpoch(1)
	closeAndFail(t, n, a)
	// The object is rebuilt once the close is held.
	if !eventually(10*time.Second, func() bool { return k.built.Load() == 2 }) {
		t.Fatal("the room was not rebuilt")
	}
	h.SetEpoch(2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"object 2: close 1000"}
	if got := k.closes(); !slices.Equal(got, want) {
		t.Fatalf("close events %q, want %q", got, want)
	}
}

// failBegin serves the closelog kind on a fake clock, with a socket that
// has been answered (the room is idle), and the room's storage handle,
// shared with the room, whose epoch the room has claimed as 2.
func failBegin(t *testing.T) (*node, *clock.Fake, *closeLogKind, *storage.Room, *websocket.Conn) {
	t.Helper()
	k := &closeLogKind{}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{k.kind()}, Clock: fake,
		HibernateAfter: 10 * time.Second, EvictAfter: time.Minute, CommitHook: k.commitHook})
	a := n.dial(t, "/rooms/closelog/r")
	send(t, a, "one")
	if got := read(t, a); got != "ok" {
		t.Fatalf("got %q", got)
	}
	h, err := n.store.Room(rooms.IDFromName("closelog", "r").String(), "closelog", "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Claim(2); err != nil {
		t.Fatal(err)
	}
	return n, fake, k, h, a
}

// closeAndFail closes c from the client's side and waits for its close
// event's batch to fail.
func closeAndFail(t *testing.T, n *node, c *websocket.Conn) {
	t.Helper()
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return n.rt.Stats().CommitsFailed >= 1 }) {
		t.Fatal("the close did not fail its batch")
	}
}
