package rooms

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/den-rooms/den/storage"
)

// holder is a room whose POST requests wait until release is closed.
type holder struct {
	Base
	entered chan struct{}
	release chan struct{}
}

func (h *holder) Request(w http.ResponseWriter, req *http.Request) error {
	if req.Method == http.MethodPost {
		h.entered <- struct{}{}
		<-h.release
	}
	return nil
}

// waitingDeletes is how many goroutines wait on a channel inside Delete.
func waitingDeletes() int {
	buf := make([]byte, 1<<20)
	for n := runtime.Stack(buf, true); ; n = runtime.Stack(buf, true) {
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("[chan receive")) && bytes.Contains(g, []byte("rooms.(*Runtime).Delete(")) {
			n++
		}
	}
	return n
}

// A Delete that comes while another of the same room runs answers as
// that one does: here it fails, as the room's files cannot all be
// removed, and both say so.
func TestSecondDeleteAnswersAsTheFirst(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := &holder{entered: make(chan struct{}), release: make(chan struct{})}
	rt, err := New(Config{Store: store, Kinds: []Kind{{Name: "b", New: func(*State) Handler { return h }}}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(t.Context())
	wake(t, rt)
	// A folder that is not empty cannot be removed as a file.
	id := IDFromName("b", "x").String()
	if err := os.MkdirAll(filepath.Join(dir, "rooms", id[:2], id+".db-shm", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	go rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/rooms/b/x", nil), "b", "x")
	<-h.entered
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := rt.Delete("b", "x")
			errs <- err
		}()
	}
	// Both wait: the first for the busy room, the second for the first.
	for deadline := time.Now().Add(10 * time.Second); waitingDeletes() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two Deletes never both waited")
		}
	}
	if info, err := rt.Info("b", "x"); err != nil || info.State != "deleting" {
		t.Errorf("while Delete waits, Info says %q (%v), want deleting", info.State, err)
	}
	close(h.release)
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("a Delete reported success, but the room's files could not all be removed")
		}
	}
	// Failed, the deletion waits to be tried again: the room is not
	// shown as merely evicted.
	if info, err := rt.Info("b", "x"); err != nil || info.State != "deleting" {
		t.Errorf("after a failed Delete, Info says %q (%v), want deleting", info.State, err)
	}
}
