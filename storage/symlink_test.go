package storage

import (
	"os"
	"path/filepath"
	"testing"
)

// A room's file moved to another folder and linked back (an operator
// moving rooms to another disk) opens, with its WAL beside the file
// itself: the room VFS leaves a file that is a link to unix-none, whose
// full name follows it.
func TestRoomFileThatIsALink(t *testing.T) {
	for _, sync := range []string{SyncNormal, SyncFull} {
		t.Run(sync, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, Options{Dir: dir, Synchronous: sync})
			const id = "ae02"
			r := openRoom(t, s, id)
			if err := r.Put("k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			p := s.path(id)
			other := filepath.Join(t.TempDir(), id+".db")
			for _, suf := range []string{"", "-wal"} {
				if err := os.Rename(p+suf, other+suf); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
			s2 := openStore(t, Options{Dir: dir, Synchronous: sync})
			r2, err := s2.Room(id, "test", "name-"+id)
			if err != nil {
				t.Fatalf("a room whose file is a link to its file elsewhere: %v", err)
			}
			if v, ok, err := r2.Get("k"); err != nil || !ok || string(v) != "v" {
				t.Fatalf("Get: %q %v %v", v, ok, err)
			}
		})
	}
}
