// Package auth decides who may open a socket in a room: it verifies a JWT
// the client brings (Verifier), finds that token in an upgrade request
// (TokenFrom), and asks an operator's HTTP backend for a verdict (Webhook).
// It imports nothing of den, so the gateway and the server can wire it in
// whichever order a deployment wants: token only, webhook only, or both.
//
// # Goroutines
//
// NewVerifier and NewWebhook start nothing. A *Verifier is immutable once
// built; any goroutine may call Verify, and Verify never blocks (it only
// parses and checks signatures). A *Webhook may be used by any goroutine;
// Check blocks for up to WebhookConfig.Timeout on the network, so it must
// not be called on a gateway event loop: call it from a goroutine of its
// own and hand the Decision back. TokenFrom, IsTokenProtocol and
// Identity.MayJoin are pure and cheap.
//
// # What reaches the client
//
// Errors from Verify wrap ErrInvalidToken and carry a short Reason from a
// fixed set that is safe to send to the client. Neither they nor a
// Decision's Err ever contain the token or the Authorization header, so
// they may be logged as they are.
package auth
