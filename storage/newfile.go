package storage

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// denTables are the tables den keeps in every room's database, made
// together so that finding one means all are there.
const denTables = `CREATE TABLE IF NOT EXISTS _den_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
	CREATE TABLE IF NOT EXISTS _den_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;`

// makeFile puts a new room's database at path when no file is there: a
// copy of an empty room database, written and synced under another name,
// then renamed into place, so that a crash leaves the whole file or none.
// Left to SQLite, a new file starts in rollback mode, goes to WAL through
// a journal, and then gets den's tables: a new room took five fsyncs and
// a journal made and deleted, against three fsyncs (this one, the WAL's
// and the folder's) with the copy.
func (s *Store) makeFile(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		// There, or not for SQLite either: its open says what is wrong.
		return nil
	}
	img, err := s.emptyRoom()
	if err != nil {
		return err
	}
	// One name per room: a copy a crash left half-written is overwritten
	// by the next, and only one Room per id makes the file at a time.
	tmp := path + ".new"
	// A folder gone fails here with ENOENT, which cantOpen counts: the
	// room is then set up as new, its folder made, as openHandle has it.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(img)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// A WAL without its database (a crash while the room was deleted)
		// would be replayed onto the new file: the deleted room back, or
		// a corrupt one.
		err = removeStale(path+"-wal", path+"-shm")
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("storage: making %s: %w", path, err)
	}
	return nil
}

// emptyRoom is the image of an empty room database (WAL mode, den's
// tables), made by SQLite once per store in the data folder and kept.
func (s *Store) emptyRoom() ([]byte, error) {
	s.emptyMu.Lock()
	defer s.emptyMu.Unlock()
	if s.empty != nil {
		return s.empty, nil
	}
	path := filepath.Join(s.dir, "rooms", ".empty-room.db")
	removeDatabase(path)
	defer removeDatabase(path)
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		return nil, err
	}
	// Closing checkpoints the WAL into the file and deletes it, so the
	// file alone is the database.
	_, err = db.Exec(`PRAGMA journal_mode = WAL; BEGIN; ` + denTables + ` COMMIT;`)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("storage: making an empty room database: %w", err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// The header names WAL (read and write versions 2), and nothing was
	// left behind in a WAL file.
	if !bytes.HasPrefix(img, []byte("SQLite format 3\x00")) || len(img) < 100 || img[18] != 2 || img[19] != 2 {
		return nil, errors.New("storage: the empty room database SQLite made is not in WAL mode")
	}
	if _, err := os.Lstat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("storage: the empty room database SQLite made kept its WAL")
	}
	s.empty = img
	return img, nil
}

// removeStale removes files that may be absent, each one tried whatever
// became of the others.
func removeStale(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeDatabase removes, as far as it can, the SQLite database at path
// and the files SQLite keeps beside it.
func removeDatabase(path string) {
	_ = removeStale(path, path+"-wal", path+"-shm", path+"-journal")
}
