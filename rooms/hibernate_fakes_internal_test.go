package rooms

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

var fakeIDs atomic.Uint64

// fsock is a gateway socket: Close tells the runtime (Closed) once, on a
// goroutine of its own, as the gateway does.
type fsock struct {
	rt     *Runtime
	id     uint64
	mu     sync.Mutex
	tags   []string
	att    []byte
	val    any
	sent   []string
	closed int // close code, 0 while open
	closes atomic.Int32
	gone   chan struct{}
}

func newFsock(rt *Runtime) *fsock {
	return &fsock{rt: rt, id: fakeIDs.Add(1), gone: make(chan struct{})}
}

func (s *fsock) ID() uint64 { return s.id }
func (s *fsock) Send(text bool, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed != 0 {
		return ErrSocketGone
	}
	s.sent = append(s.sent, string(p))
	return nil
}
func (s *fsock) Close(code int, reason string) {
	s.mu.Lock()
	if s.closed != 0 {
		s.mu.Unlock()
		return
	}
	s.closed = code
	s.mu.Unlock()
	close(s.gone)
	go s.rt.Closed(s, code, reason, true)
}

// clientClose is the client leaving.
func (s *fsock) clientClose() {
	s.mu.Lock()
	if s.closed != 0 {
		s.mu.Unlock()
		return
	}
	s.closed = 1001
	s.mu.Unlock()
	close(s.gone)
	s.rt.Closed(s, 1001, "bye", true)
}
func (s *fsock) code() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
func (s *fsock) msgs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}
func (s *fsock) Tags() []string         { return s.tags }
func (s *fsock) SetTags(t []string)     { s.tags = t }
func (s *fsock) Attachment() []byte     { return s.att }
func (s *fsock) SetAttachment(b []byte) { s.att = b }
func (s *fsock) Value() any             { return s.val }
func (s *fsock) SetValue(v any)         { s.val = v }

// fjoin is a handshake.
type fjoin struct {
	rt     *Runtime
	req    *http.Request
	answer chan *fsock // the socket, or nil if refused
	status int
}

func newFjoin(rt *Runtime, path string) *fjoin {
	return &fjoin{rt: rt, req: httptest.NewRequest(http.MethodGet, path, nil), answer: make(chan *fsock, 1)}
}
func (j *fjoin) Request() *http.Request { return j.req }
func (j *fjoin) Accept(v any) Socket {
	s := newFsock(j.rt)
	s.SetValue(v)
	j.answer <- s
	return s
}
func (j *fjoin) Refuse(status int, reason string) {
	j.status = status
	j.answer <- nil
}
func (j *fjoin) Identity() *Identity { return nil }

// join dials kind/name and waits for the answer.
func join(t *testing.T, rt *Runtime, kind, name string) *fsock {
	t.Helper()
	j := newFjoin(rt, "/rooms/"+kind+"/"+name)
	rt.Join(kind, name, j)
	select {
	case s := <-j.answer:
		if s == nil {
			t.Fatalf("join %s/%s refused: %d", kind, name, j.status)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("join %s/%s: no answer", kind, name)
	}
	return nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func fakeRuntime(t *testing.T, kinds ...Kind) (*Runtime, *storage.Store, *clock.Fake) {
	t.Helper()
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	rt, err := New(Config{Store: store, Kinds: kinds, Clock: fake, HibernateAfter: 10 * time.Second, EvictAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rt.Shutdown(t.Context())
		store.Close()
	})
	return rt, store, fake
}

func (rt *Runtime) entry(kind, name string) *room {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.rooms[IDFromName(kind, name)]
}

func (r *room) isRunning() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

func httptestRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }
func httptestRequest() *http.Request {
	return httptest.NewRequest(http.MethodGet, "/rooms/x/y", nil)
}
