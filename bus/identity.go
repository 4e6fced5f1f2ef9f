package bus

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// NATS identities (docs/security.md). Every connection but the hub's own
// authenticates as a Koji user, a Koji host or a protonmsg bridge; the hub
// answers NATS' auth callout and grants each identity the subjects below.
// The identity's token is part of its inbox prefix and of every API request
// subject it may publish, so the server itself says who sent a request and
// who may read its reply.

// UnboundIdentity is the identity token of the hub's own connections: only
// the hub user may publish API requests under it.
const UnboundIdentity = "="

// AnonymousUserPrefix + a random id is the NATS user name of a connection
// without a Koji user (no password): it may call the API without a session
// (Koji's anonymous calls, getSSLChallenge and sslLogin) and read events,
// under a token of its own, AnonymousIdentityToken(id).
const AnonymousUserPrefix = "=anon."

// AnonymousIdentityToken is the token of an anonymous connection. The
// lower-case "=a" is never the start of an escaped user name.
func AnonymousIdentityToken(id string) string { return "=a" + EscapeToken(id) }

// BridgeUserPrefix + name is the NATS user name a protonmsg bridge connects
// as (its password: the bridge secret of the hub's data directory).
const BridgeUserPrefix = "$bridge."

// IdentityToken is the subject token of a Koji user or host name.
func IdentityToken(name string) string { return EscapeToken(name) }

// BridgeIdentityToken is the subject token of a bridge. EscapeToken writes
// its escapes in upper case, so "=b..." is never a user's token.
func BridgeIdentityToken(name string) string { return "=b" + EscapeToken(name) }

// BridgeConnectConfig is how the protonmsg bridge named name connects: as
// its own identity, with the hub's bridge secret.
func BridgeConnectConfig(name, secret string, urls []string) ConnectConfig {
	return ConnectConfig{Name: "kojibridge-" + name, URLs: urls, User: BridgeUserPrefix + name, Password: secret,
		InboxPrefix: InboxPrefix(BridgeIdentityToken(name))}
}

// InboxPrefix is the only inbox prefix an identity may subscribe under.
func InboxPrefix(token string) string { return "_INBOX_" + token }

// IdentityAPISubject is the request subject of method sent by identity token.
func IdentityAPISubject(token, method string) string { return APIPrefix + token + "." + method }

// SplitAPISubject returns the identity token and the method of a request subject.
func SplitAPISubject(subject string) (token, method string, ok bool) {
	rest, found := strings.CutPrefix(subject, APIPrefix)
	if !found {
		return "", "", false
	}
	token, method, ok = strings.Cut(rest, ".")
	return token, method, ok && token != "" && method != ""
}

// ConnIdentity returns the identity token a connection was given, read from
// its inbox prefix: UnboundIdentity for a connection without one (the hub's).
func ConnIdentity(nc *nats.Conn) string {
	first, _, _ := strings.Cut(nc.NewInbox(), ".")
	if tok, ok := strings.CutPrefix(first, "_INBOX_"); ok && tok != "" {
		return tok
	}
	return UnboundIdentity
}

// Grants are the subjects an identity may publish to and subscribe to.
type Grants struct {
	PubAllow, PubDeny []string
	SubAllow          []string
	// Respond allows one reply to each request received (the bridge's status).
	Respond bool
}

// jsAPI is the prefix of the JetStream API.
const jsAPI = "$JS.API."

// readStream is what an ordered consumer (watch-events, watch-logs -f) needs.
func readStream(stream string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + stream,
		jsAPI + "CONSUMER.CREATE." + stream + ".*",
		jsAPI + "CONSUMER.CREATE." + stream + ".*.>",
		jsAPI + "CONSUMER.INFO." + stream + ".*",
		jsAPI + "CONSUMER.DELETE." + stream + ".*",
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".*",
	}
}

// denyConsumers keeps an identity away from durable consumers it does not
// own: NATS cannot tell an ordered consumer's create from a durable's by
// subject, so the hub names each existing durable here.
func denyConsumers(stream string, names []string) []string {
	var out []string
	for _, n := range names {
		for _, op := range []string{"CREATE", "INFO", "DELETE", "MSG.NEXT", "DURABLE.CREATE"} {
			out = append(out, jsAPI+"CONSUMER."+op+"."+stream+"."+n)
		}
		out = append(out, jsAPI+"CONSUMER.CREATE."+stream+"."+n+".>", "$JS.ACK."+stream+"."+n+".>")
	}
	return out
}

// UserGrants are a Koji user's: API calls under its own token, replies and
// JetStream answers under its own inbox prefix, events live and replayed,
// task output live. durables are the existing durable consumers of
// KOJI_EVENTS and of the task output stream, which it may not touch.
func UserGrants(token string, durables map[string][]string) Grants {
	pub := []string{IdentityAPISubject(token, ">"), BridgeStatusSubject, "$JS.FC.>"}
	pub = append(pub, readStream(EventsStream)...)
	pub = append(pub, readStream(UploadsStream)...)
	var deny []string
	for _, stream := range []string{EventsStream, UploadsStream} {
		deny = append(deny, denyConsumers(stream, durables[stream])...)
	}
	return Grants{
		PubAllow: pub, PubDeny: deny,
		SubAllow: []string{InboxPrefix(token) + ".>", EventPrefix + ">"},
	}
}

// HostGrants are a build host's: a user's, plus pulling and acking task
// queue messages, publishing task output and waking other builders. A task
// queue's consumer is created when a task is first queued there, possibly
// after the host connected, and NATS grants subjects at connect only: so a
// host may pull any queue but those in notMine, the queues existing at
// connect that are not its own (other channels' and arches', other hosts'
// pinned ones). Task output goes under its own host id only.
func HostGrants(token string, hostID int64, durables map[string][]string, notMine []string) Grants {
	g := UserGrants(token, durables)
	g.PubAllow = append(g.PubAllow,
		jsAPI+"CONSUMER.INFO."+TasksStream+".*",
		jsAPI+"CONSUMER.MSG.NEXT."+TasksStream+".*",
		"$JS.ACK."+TasksStream+".>")
	g.PubDeny = append(g.PubDeny, denyConsumers(TasksStream, notMine)...)
	g.PubAllow = append(g.PubAllow, UploadPrefix+formatInt(hostID)+".>", NotifyPrefix+"tasks.>")
	g.SubAllow = append(g.SubAllow, NotifyPrefix+"tasks.>")
	return g
}

// BridgeGrants are a protonmsg bridge's: its own durable consumer on
// KOJI_EVENTS, and answering status requests.
func BridgeGrants(token, consumer string) Grants {
	pub := []string{}
	for _, op := range []string{"CREATE", "INFO", "DELETE", "MSG.NEXT"} {
		pub = append(pub, jsAPI+"CONSUMER."+op+"."+EventsStream+"."+consumer)
	}
	pub = append(pub, "$JS.ACK."+EventsStream+"."+consumer+".>")
	return Grants{
		PubAllow: pub,
		SubAllow: []string{InboxPrefix(token) + ".>", BridgeStatusSubject},
		Respond:  true,
	}
}
