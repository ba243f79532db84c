package storage

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"modernc.org/sqlite"
)

type noPageCache struct{}

func (noPageCache) Create(pageSize, extraSize int, purgeable bool) (sqlite.Cache, error) {
	return nil, errors.New("unused")
}

// A program embedding den can still set SQLite up process-wide before it
// opens a store (modernc.org/sqlite's RegisterPageCache, which must come
// before SQLite initializes): importing storage does not initialize
// SQLite, as registering the room VFS at package init did.
func TestImportLeavesSQLiteUninitialized(t *testing.T) {
	if os.Getenv("DEN_PAGE_CACHE_CHILD") != "" {
		fmt.Println(sqlite.RegisterPageCache(noPageCache{}))
		os.Exit(0)
	}
	cmd := testChild(t, "TestImportLeavesSQLiteUninitialized", "DEN_PAGE_CACHE_CHILD=1")
	out, err := cmd.Output()
	if got := strings.TrimSpace(string(out)); err != nil || got != "<nil>" {
		t.Fatalf("RegisterPageCache in main of a program importing storage: %v %s", err, got)
	}
}
