package auth

import (
	"path"
	"strings"
)

// roomPatterns reads a "rooms" claim: a list of strings, or one string
// standing for a list of one. Anything else is not a claim den can honour.
func roomPatterns(raw any) ([]string, bool) {
	switch v := raw.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// MayJoin reports whether the token lets its bearer into room (kind,
// name). A token without a "rooms" claim may join any room; one with the
// claim may join only rooms that one of its patterns matches, so an empty
// list allows none.
//
// A pattern is "kind/name", split at its first '/', and each half is a
// path.Match pattern: "chat/*", "*/lobby", "counter/team-?". As in
// path.Match, '*' and '?' never match a '/' inside a name. A malformed
// pattern ("chat", "chat/[") matches nothing rather than everything.
func (id *Identity) MayJoin(kind, name string) bool {
	if id == nil {
		return false
	}
	// Rooms alone also limits, for an Identity built by hand.
	if _, limited := id.Claims["rooms"]; !limited && id.Rooms == nil {
		return true
	}
	for _, p := range id.Rooms {
		if matchRoom(p, kind, name) {
			return true
		}
	}
	return false
}

func matchRoom(pattern, kind, name string) bool {
	kp, np, ok := strings.Cut(pattern, "/")
	if !ok {
		return false
	}
	// Both halves are matched even when the first fails, so a malformed
	// second half is never excused by the first.
	kOK, kErr := path.Match(kp, kind)
	nOK, nErr := path.Match(np, name)
	return kErr == nil && nErr == nil && kOK && nOK
}
