package auth

import (
	"net/http"
	"net/url"
	"strings"
)

// Where TokenFrom found a token.
const (
	SourceHeader   = "authorization"
	SourceProtocol = "subprotocol"
	SourceQuery    = "query"
)

// TokenProtocolPrefix starts a Sec-WebSocket-Protocol offer that carries a
// token. Browsers cannot set Authorization on a WebSocket, so they offer
// the token as a subprotocol beside the real one:
//
//	new WebSocket(url, ["den", "bearer." + token])
const TokenProtocolPrefix = "bearer."

// TokenFrom finds the token in an upgrade request, trying in order the
// Authorization header ("Bearer <token>", scheme in any case), a
// Sec-WebSocket-Protocol offer "bearer.<token>", and the "token" query
// parameter. It returns the token and where it was found (a Source*
// constant), or "", "" when there is none. It checks nothing else:
// Verify does, refusing one over MaxTokenBytes before decoding it.
func TokenFrom(r *http.Request) (token, source string) {
	if r == nil {
		return "", ""
	}
	rawQuery := ""
	if r.URL != nil {
		rawQuery = r.URL.RawQuery
	}
	return TokenFromHeader(r.Header, rawQuery)
}

// TokenFromHeader is TokenFrom for a caller that has the header and the
// raw query string but no *http.Request (the gateway parses its own). The
// header's keys must be canonical, as net/http and Header.Set make them.
func TokenFromHeader(h http.Header, rawQuery string) (token, source string) {
	if t := bearer(h.Get("Authorization")); t != "" {
		return t, SourceHeader
	}
	// Indexed by its canonical form: Values would canonicalise the name on
	// every call, and allocate doing it.
	for _, v := range h["Sec-Websocket-Protocol"] {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if IsTokenProtocol(p) && len(p) > len(TokenProtocolPrefix) {
				return p[len(TokenProtocolPrefix):], SourceProtocol
			}
		}
	}
	if t := queryToken(rawQuery); t != "" {
		return t, SourceQuery
	}
	return "", ""
}

// IsTokenProtocol reports whether a Sec-WebSocket-Protocol offer carries
// a token ("bearer." in any case, then anything). The gateway must never
// select such an offer: the 101 response would echo the token.
func IsTokenProtocol(p string) bool {
	return len(p) >= len(TokenProtocolPrefix) && strings.EqualFold(p[:len(TokenProtocolPrefix)], TokenProtocolPrefix)
}

// bearer returns the credentials of an Authorization value using the
// Bearer scheme (RFC 6750 §2.1; the scheme is case-insensitive), or "".
func bearer(v string) string {
	const scheme = "bearer"
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return ""
	}
	rest := v[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "" // "Bearerx ..." is another scheme
	}
	return strings.TrimSpace(rest)
}

// queryToken returns the first "token" parameter of a raw query, unescaped,
// or "". It scans instead of url.ParseQuery so that a long query costs no
// map and no decoding of the parameters that are not the token.
func queryToken(raw string) string {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		v, ok := strings.CutPrefix(pair, "token=")
		if !ok || v == "" {
			continue
		}
		if t, err := url.QueryUnescape(v); err == nil {
			return t
		}
		// Badly escaped: hand it on as it is, for Verify to refuse as
		// malformed rather than to be reported as no token at all.
		return v
	}
	return ""
}
