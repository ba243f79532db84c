package storage

import (
	"os"
	"path/filepath"
	"testing"
)

// A data folder's path goes into "file:" URIs (node.db's and every
// room's), where SQLite reads '%' as an escape, '?' as the start of the
// query and '#' as the start of a fragment: a store on a relative data
// folder (den's default, ./den-data), made absolute, under a folder whose
// name holds them opens its files where they are.
func TestDataFolderWithURICharacters(t *testing.T) {
	for sub, name := range map[string]string{"hash": "c#", "percent": "x%41y", "question": "q?a=b"} {
		t.Run(sub, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(base, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Chdir(base)
			s, err := Open(Options{Dir: "den-data", Synchronous: SyncFull})
			if err != nil {
				t.Fatalf("Open(den-data) in %s: %v", base, err)
			}
			defer s.Close()
			r, err := s.Room("ad06", "test", "uri")
			if err != nil {
				t.Fatalf("Room in %s: %v", base, err)
			}
			if err := r.Put("k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(base, "den-data", "node.db")); err != nil {
				t.Fatalf("node.db is not in the data folder: %v", err)
			}
		})
	}
}
