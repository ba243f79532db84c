package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/den-rooms/den/rooms"
)

var errRoomPath = errors.New("gateway: not a room path")

// roomPath splits a request target of the form /rooms/{kind}/{name}[/rest]
// (query ignored). Each segment is unescaped on its own, so a name may
// hold "%2F". kind is lower-case letters, digits, '-' and '_'; name is
// UTF-8 without control characters. The common origin-form target is
// split without building a url.URL.
func roomPath(target string) (kind, name, rest string, err error) {
	p, _, _ := strings.Cut(target, "?")
	if !strings.HasPrefix(p, "/") {
		u, err := url.ParseRequestURI(target) // absolute-form
		if err != nil {
			return "", "", "", errRoomPath
		}
		p = u.EscapedPath()
	}
	if !validEscapes(p) {
		return "", "", "", errRoomPath
	}
	p, ok := strings.CutPrefix(p, "/rooms/")
	if !ok {
		return "", "", "", errRoomPath
	}
	rawKind, p, _ := strings.Cut(p, "/")
	rawName, rest, hasRest := strings.Cut(p, "/")
	if hasRest {
		rest = "/" + rest
	}
	if kind, err = url.PathUnescape(rawKind); err != nil || !rooms.ValidKind(kind) {
		return "", "", "", errRoomPath
	}
	if name, err = url.PathUnescape(rawName); err != nil || !rooms.ValidName(name) {
		return "", "", "", errRoomPath
	}
	return kind, name, rest, nil
}

// validEscapes reports whether every '%' in p starts a hex escape.
func validEscapes(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// routes is the plain-HTTP side of the port: health, rooms, then the
// configured handler.
func (srv *Server) routes() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /livez", ok)
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !srv.Ready() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ok(w, r)
	})
	mux.HandleFunc("/rooms/", func(w http.ResponseWriter, r *http.Request) {
		kind, name, _, err := roomPath(r.RequestURI)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		srv.rooms.ServeHTTP(w, r, kind, name)
	})
	if h := srv.cfg.Handler; h != nil {
		mux.Handle("/", h)
	}
	return mux
}
