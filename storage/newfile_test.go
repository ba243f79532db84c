package storage

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A new room's file is made whole from den's empty room: in WAL mode,
// with den's tables, whatever a crash left of an earlier try beside it,
// and nothing of the making is left behind.
func TestNewRoomFile(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	p := s.path("aa01")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	// Half a copy, as a crash between write and rename leaves it.
	if err := os.WriteFile(p+".new", []byte("SQLite format 3\x00garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := openRoom(t, s, "aa01")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte("SQLite format 3\x00")) || img[18] != 2 || img[19] != 2 {
		t.Fatalf("room file header % x, want a WAL-mode database", img[:20])
	}
	for _, left := range []string{p + ".new", p + "-journal", filepath.Join(dir, "rooms", ".empty-room.db")} {
		if _, err := os.Lstat(left); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is there (%v)", left, err)
		}
	}
	if err := r.Wake(); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get after a wake: %q %v", v, err)
	}
	// A file that is there, even empty, is SQLite's to open: it becomes
	// the room's database as before.
	p2 := s.path("aa02")
	if err := os.WriteFile(p2, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := openRoom(t, s, "aa02")
	if err := r2.Put("k", []byte("w")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r2.Get("k"); err != nil || !ok || string(v) != "w" {
		t.Fatalf("room on an empty file: %q %v", v, err)
	}
	// Deleting a room takes a leftover copy with it.
	if err := os.WriteFile(p2+".new", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("aa02"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p2 + ".new"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.new outlived the room (%v)", p2, err)
	}
}
