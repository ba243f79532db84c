package storage

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Rooms opened and deleted at once, by several goroutines over a few ids,
// leave every id with both its record and its file, or neither: a Delete
// that takes a Room still opening waits for its record, and removes it.
func TestRoomsOpenedWhileDeletedKeepRecordAndFileTogether(t *testing.T) {
	for round := range 10 {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir, MaxOpen: 2})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("ab%d", i%3)
					if g%2 == 0 {
						if err := s.Delete(id); err != nil {
							t.Errorf("Delete: %v", err)
						}
					} else if r, err := s.Room(id, "k", "n"); err == nil {
						_ = r.Put("k", []byte("v"))
					}
				}
			})
		}
		// A bounded burst of load, not a wait for anything.
		time.Sleep(50 * time.Millisecond)
		close(stop)
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open(Options{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			id := fmt.Sprintf("ab%d", i)
			_, recorded, err := s.Record(id)
			if err != nil {
				t.Fatal(err)
			}
			_, ferr := os.Stat(s.path(id))
			if recorded != (ferr == nil) {
				t.Errorf("round %d, room %s: recorded %v, file %v", round, id, recorded, ferr)
			}
		}
		s.Close()
	}
}
