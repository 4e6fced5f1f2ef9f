package bus

import "strings"

// Subjects, streams and buckets. docs/architecture.md lists them with their
// retention and who may publish or subscribe.
const (
	// APIPrefix + identity token + "." + method is the request/reply subject
	// of an API method (IdentityAPISubject).
	APIPrefix = "koji.api."
	// EventPrefix + address (protonmsg's: "task.open", "build.tag", ...) carries every state change.
	EventPrefix = "koji.event."
	// TaskPrefix + channel + "." + arch is a work-queue subject; TaskPrefix + "host." + id a pinned one.
	TaskPrefix = "koji.tasks."

	// EventsStream keeps every event (Limits retention) for replay, watch-events and the bridge.
	EventsStream = "KOJI_EVENTS"
	// TasksStream is the work queue builders pull from (WorkQueue retention).
	TasksStream = "KOJI_TASKS"
	// StateBucket is the one KV bucket holding the hub's current state. One
	// bucket: a transaction is one message in it, validated in order by every hub.
	StateBucket = "koji"
	// TaskOutputStore is the Object Store holding finished task output files.
	TaskOutputStore = "koji-task-output"

	// UploadPrefix + "<host>.<task>.<attempt>.<escaped file name>" carries a
	// task's output as the builder of host id <host> writes it (each host may
	// publish under its own id only), in chunks: live for watch-logs -f, and
	// the chunks of the file's object in TaskOutputStore once the hub accepts
	// the attempt's result and writes the object's meta (the object's NUID
	// is UploadToken). Nothing is copied.
	UploadPrefix = "$O." + TaskOutputStore + ".C."
	// UploadsStream is the Object Store's stream, which holds the chunks.
	UploadsStream = "OBJ_" + TaskOutputStore
	// NotifyPrefix + "tasks.<channel id>.<arch>" or "tasks.host.<host id>" wakes
	// idle builders when a task is queued (core NATS; a lost wake-up is caught by
	// the builder's safety timer).
	NotifyPrefix = "koji.notify."
)

// Headers of task queue and upload messages.
const (
	HeaderTaskID      = "Koji-Task-Id"
	HeaderTaskAttempt = "Koji-Task-Attempt"
	HeaderTaskMethod  = "Koji-Task-Method"
	HeaderTaskWeight  = "Koji-Task-Weight"
	HeaderUploadFinal = "Koji-Upload-Final"
	HeaderUploadName  = "Koji-Upload-Name"
)

// UploadSubject is the subject of a task file's chunks for one attempt on one host.
func UploadSubject(hostID, taskID, attempt int64, name string) string {
	return UploadPrefix + UploadToken(hostID, taskID, attempt, name)
}

// UploadToken names a task file of one attempt on one host:
// "<host>.<task>.<attempt>.<escaped name>".
func UploadToken(hostID, taskID, attempt int64, name string) string {
	return formatInt(hostID) + "." + formatInt(taskID) + "." + formatInt(attempt) + "." + EscapeToken(name)
}

// UploadFilter is the subject filter of the files of a task's attempt on a
// host; a zero host or attempt matches any.
func UploadFilter(hostID, taskID, attempt int64) string {
	orAny := func(n int64) string {
		if n == 0 {
			return "*"
		}
		return formatInt(n)
	}
	return UploadPrefix + orAny(hostID) + "." + formatInt(taskID) + "." + orAny(attempt) + ".>"
}

// EscapeToken turns a file name into one subject token: letters, digits, '-'
// and '_' stay, every other byte becomes =XX.
func EscapeToken(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteString("=")
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	if b.Len() == 0 {
		return "="
	}
	return b.String()
}

// UnescapeToken reverses EscapeToken.
func UnescapeToken(tok string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] != '=' {
			b.WriteByte(tok[i])
			continue
		}
		if tok == "=" {
			return "", true
		}
		if i+2 >= len(tok) {
			return "", false
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Headers used on kojibus messages.
const (
	// HeaderSession carries "<session-id>-<session-key>" on API requests.
	HeaderSession = "Koji-Session"
	// HeaderRev, on an API reply, is the state revision the answering hub
	// had reached; HeaderMinRev, on a request, is the highest one the client
	// has seen: a hub waits until its view has reached it before answering,
	// so a client reads its own writes whichever hub answers.
	HeaderRev    = "Kojibus-State-Rev"
	HeaderMinRev = "Kojibus-Min-Rev"
	// HeaderRequestID makes a write idempotent: a retry with the same id returns the first result.
	HeaderRequestID = "Koji-Request-Id"
	// HeaderEventID is the monotonic Koji event id of the change that produced an event.
	HeaderEventID = "Koji-Event-Id"
	// HeaderPropPrefix prefixes each protonmsg property on an event: Koji-Prop-type, Koji-Prop-tag, ...
	HeaderPropPrefix = "Koji-Prop-"
	// HeaderPropsJSON carries all protonmsg properties as one JSON object, typed (ints stay ints).
	HeaderPropsJSON = "Koji-Props"
	// HeaderAddress carries the protonmsg address ("build.tag") of an event.
	HeaderAddress = "Koji-Address"
)

// EventSubject returns the subject an event with a protonmsg address goes to.
func EventSubject(address string) string { return EventPrefix + address }

// EventAddress returns the protonmsg address of an event subject.
func EventAddress(subject string) string { return strings.TrimPrefix(subject, EventPrefix) }

// BridgeStatusSubject is where every protonmsg bridge answers status
// requests (kojictl bridge-status gathers the answers).
const BridgeStatusSubject = "koji.bridge.status"
