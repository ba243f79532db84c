package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
)

// guard is the gateway's Rooms with who-may-connect in front: a join, or
// an HTTP request to a room, reaches its room only with a valid token
// (when tokens are configured) and the connect webhook's consent (when it
// is), and the room sees who the client is. Messages and closes of
// sockets already in pass straight through.
type guard struct {
	gateway.Rooms
	verifier *auth.Verifier // nil: tokens are not checked
	required bool           // a join without a token is refused
	webhook  *auth.Webhook  // nil: no webhook
	inflight chan struct{}  // bounds the webhook calls at once
	baseCtx  context.Context
	log      *zap.Logger
}

// refusal is den's answer to a client that may not in.
type refusal struct {
	why    gateway.Refusal
	status int
	reason string
	header http.Header
}

// Join checks the token on the event loop (a signature check is
// microseconds) and asks the webhook on a goroutine of its own, so a slow
// backend holds only the joins that wait for it.
func (g *guard) Join(j *gateway.Join) {
	req := j.Request() // parsed now: the head is valid only during Join
	if req == nil {
		j.RefuseFor(gateway.RefusedAuth, http.StatusBadRequest, "bad request", nil)
		return
	}
	id, r := g.checkToken(req, j.Kind, j.Name)
	if r != nil {
		g.refuseJoin(j, r)
		return
	}
	if g.webhook == nil {
		if id != nil {
			j.SetIdentity(id)
		}
		g.Rooms.Join(j)
		return
	}
	if !g.claimWebhook() {
		g.refuseJoin(j, backendBusy)
		return
	}
	go func() {
		defer g.releaseWebhook()
		id, r := g.askWebhook(g.baseCtx, req, j.Kind, j.Name, id)
		if r != nil {
			g.refuseJoin(j, r)
			return
		}
		if id != nil {
			j.SetIdentity(id)
		}
		g.Rooms.Join(j)
	}()
}

// ServeHTTP lets an HTTP request to a room through the same checks as a
// join: its room's data is no less the room's for being read over HTTP.
// The room sees who the client is (rooms.RequestIdentity) as it does a
// joiner. It runs on a goroutine of its own, so the webhook is asked in
// line.
func (g *guard) ServeHTTP(w http.ResponseWriter, req *http.Request, kind, name string) {
	refuse := func(r *refusal) {
		g.logRefusal("request refused", kind, name, r)
		for k, v := range r.header {
			w.Header()[k] = v
		}
		http.Error(w, r.reason, r.status)
	}
	id, r := g.checkToken(req, kind, name)
	if r != nil {
		refuse(r)
		return
	}
	if g.webhook != nil {
		if !g.claimWebhook() {
			refuse(backendBusy)
			return
		}
		id, r = g.askWebhook(req.Context(), req, kind, name, id)
		g.releaseWebhook()
		if r != nil {
			refuse(r)
			return
		}
	}
	if id != nil {
		req = rooms.WithIdentity(req, id)
	}
	g.Rooms.ServeHTTP(w, req, kind, name)
}

// backendBusy refuses a client while the webhook calls at once are at
// their bound: clients with ever new query strings defeat the webhook's
// cache and its sharing of identical calls; they must not defeat the node.
var backendBusy = &refusal{why: gateway.RefusedWebhook, status: http.StatusServiceUnavailable, reason: "auth backend busy"}

func (g *guard) claimWebhook() bool {
	select {
	case g.inflight <- struct{}{}:
		return true
	default:
		return false
	}
}

func (g *guard) releaseWebhook() { <-g.inflight }

// askWebhook asks the connect webhook about req, and returns the identity
// id becomes with the backend's claims and tags, or why the client may
// not in.
func (g *guard) askWebhook(ctx context.Context, req *http.Request, kind, name string, id *rooms.Identity) (*rooms.Identity, *refusal) {
	d := g.webhook.Check(ctx, kind, name, req)
	if d.Err != nil {
		g.log.Warn("connect webhook failed", zap.String("kind", kind), zap.String("room", name), zap.Bool("allowed", d.Allow), zap.Error(d.Err))
	}
	if !d.Allow {
		var challenge http.Header
		if d.Status == http.StatusUnauthorized {
			challenge = bearerChallenge // RFC 9110 §15.5.2: a 401 names a scheme
		}
		return nil, &refusal{why: gateway.RefusedWebhook, status: d.Status, reason: d.Reason, header: challenge}
	}
	if err := checkTags(d.Tags); err != nil {
		g.log.Warn("connect webhook answered tags den cannot keep", zap.String("kind", kind), zap.String("room", name), zap.Error(err))
		return nil, &refusal{why: gateway.RefusedWebhook, status: http.StatusServiceUnavailable, reason: auth.ReasonBackendUnavailable}
	}
	if len(d.Claims) > 0 || len(d.Tags) > 0 {
		if id == nil {
			id = &rooms.Identity{}
		}
		id.Claims = mergeClaims(id.Claims, d.Claims)
		id.Tags = slices.Clone(d.Tags)
		// The webhook's word wins over the token's.
		if name, _ := d.Claims["name"].(string); name != "" {
			id.Name = name
		}
		if sub, _ := d.Claims["sub"].(string); sub != "" {
			id.Subject = sub
		}
	}
	return id, nil
}

// checkToken verifies the request's token, if tokens are configured, and
// returns who it speaks for, or why the client may not in: 401 for a
// missing (when required) or invalid token, 403 for a token not good for
// this room.
func (g *guard) checkToken(req *http.Request, kind, name string) (*rooms.Identity, *refusal) {
	if g.verifier == nil {
		return nil, nil
	}
	token, _ := auth.TokenFrom(req)
	ident, err := g.verifier.Verify(token)
	switch {
	case errors.Is(err, auth.ErrNoToken) && !g.required:
		return nil, nil
	case errors.Is(err, auth.ErrNoToken):
		return nil, &refusal{why: gateway.RefusedAuth, status: http.StatusUnauthorized, reason: "a token is required", header: bearerChallenge}
	case err != nil:
		reason := "invalid token"
		var te *auth.TokenError
		if errors.As(err, &te) {
			reason = "invalid token: " + te.Reason
		}
		return nil, &refusal{why: gateway.RefusedAuth, status: http.StatusUnauthorized, reason: reason, header: invalidTokenChallenge}
	case !ident.MayJoin(kind, name):
		return nil, &refusal{why: gateway.RefusedAuth, status: http.StatusForbidden, reason: "the token does not allow this room"}
	}
	return &rooms.Identity{Subject: ident.Subject, Name: ident.Name, Claims: ident.Claims}, nil
}

// logRefusal logs a refused join or request (sampled, as all of den's
// logs are, so a flood of them cannot flood the log). Never the token.
func (g *guard) logRefusal(msg, kind, name string, r *refusal) {
	// Checked first: a flood of refusals, which the sampler mostly drops,
	// then builds no fields for the entries it drops.
	if ce := g.log.Check(zap.InfoLevel, msg); ce != nil {
		ce.Write(zap.String("kind", kind), zap.String("room", name), zap.Int("status", r.status), zap.String("reason", r.reason))
	}
}

// refuseJoin logs j's refusal and answers it. A method, not a closure in
// Join: the webhook's goroutine would move that closure to the heap for
// every join, the ones let in too.
func (g *guard) refuseJoin(j *gateway.Join, r *refusal) {
	g.logRefusal("join refused", j.Kind, j.Name, r)
	j.RefuseFor(r.why, r.status, r.reason, r.header)
}

// maxWebhookCalls bounds the joins waiting on the connect webhook at once;
// more are refused with 503.
const maxWebhookCalls = 1024

// maxWebhookTags is how many tags the webhook may give a socket: half of
// what a socket holds, so the room's own still fit.
const maxWebhookTags = rooms.MaxTags / 2

// checkTags checks the webhook's tags against what a socket may hold.
func checkTags(tags []string) error {
	if len(tags) > maxWebhookTags {
		return fmt.Errorf("%d tags, at most %d", len(tags), maxWebhookTags)
	}
	for _, t := range tags {
		if len(t) > rooms.MaxTagBytes {
			return fmt.Errorf("a tag of %d bytes, at most %d", len(t), rooms.MaxTagBytes)
		}
	}
	return nil
}

// The challenges of a 401 (RFC 6750): a token is wanted, or the one sent
// was not good.
var (
	bearerChallenge       = http.Header{"WWW-Authenticate": {`Bearer realm="den"`}}
	invalidTokenChallenge = http.Header{"WWW-Authenticate": {`Bearer realm="den", error="invalid_token"`}}
)

// mergeClaims is a's claims with b's on top.
func mergeClaims(a, b map[string]any) map[string]any {
	if len(a) == 0 {
		return maps.Clone(b)
	}
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// pickSubprotocol chooses the first subprotocol a client offers that does
// not carry a token: a browser that offers ["den", "bearer.<token>"] must
// get one of its offers back, and it must not be the token.
func pickSubprotocol(_ string, offered []string) string {
	for _, p := range offered {
		if !auth.IsTokenProtocol(p) {
			return p
		}
	}
	return ""
}
