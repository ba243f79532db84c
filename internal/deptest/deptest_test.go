// Package deptest holds the test that keeps den's package boundaries: a
// package may import only what DESIGN.md's table allows.
package deptest

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/den-rooms/den"

// allowed is DESIGN.md's table: each den package and the den packages it
// may import. internal/wsframe is the frame codec the gateway and the load
// generator share; internal/clock is the injected time every package that
// waits may take. A package missing here fails the test, so a new one
// must be placed in the table on purpose.
var allowed = map[string][]string{
	"internal/clock":    {},
	"internal/wsframe":  {},
	"internal/deptest":  {},
	"storage":           {"internal/clock"},
	"storage/directory": {"internal/clock"},
	"alarms":            {"storage", "internal/clock"},
	"rooms":             {"storage", "storage/directory", "alarms", "internal/clock"},
	"rooms/builtin":     {"rooms"},
	"hibernation":       {"rooms", "internal/clock"},
	"gateway":           {"rooms", "hibernation", "internal/clock", "internal/wsframe"},
	"loadtest":          {"internal/wsframe"},
	// auth checks who may connect (JWTs, the connect webhook); it knows
	// nothing of den's other packages, and the server puts it in front
	// of the rooms.
	"auth": {},
	// server wires a node for den serve and for programs with their own
	// kinds; DESIGN.md's table puts that wiring in cmd/den, which a
	// program cannot import.
	"server":  {"auth", "gateway", "rooms", "rooms/builtin", "storage"},
	"cmd/den": {"*"},
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestImportsFollowTheTable(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, banned := range []string{"util", "common"} {
			if strings.Contains("/"+name+"/", "/"+banned+"/") {
				t.Errorf("package %s: no %s packages (DESIGN.md)", name, banned)
			}
		}
		may, ok := allowed[name]
		if !ok {
			t.Errorf("package %s is not in the dependency table; add it to DESIGN.md's table and to this test", name)
			continue
		}
		if len(may) == 1 && may[0] == "*" {
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			if !slices.Contains(may, dep) {
				t.Errorf("%s imports %s; it may import only %v", name, dep, may)
			}
		}
	}
	if seen < 3 {
		t.Fatalf("go list found %d packages", seen)
	}
}
