package bus

import "strings"

// Subjects, streams and buckets. docs/architecture.md lists them with their
// retention and who may publish or subscribe.
const (
	// APIPrefix + method is the request/reply subject of an API method.
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
	// bucket, so that a state change and its outbox entry commit as one atomic batch.
	StateBucket = "koji"
	// TaskOutputStore is the Object Store holding finished task output files.
	TaskOutputStore = "koji-task-output"
)

// Headers used on kojibus messages.
const (
	// HeaderSession carries "<session-id>-<session-key>" on API requests.
	HeaderSession = "Koji-Session"
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

// APISubject returns the request subject of an API method.
func APISubject(method string) string { return APIPrefix + method }

// EventSubject returns the subject an event with a protonmsg address goes to.
func EventSubject(address string) string { return EventPrefix + address }

// EventAddress returns the protonmsg address of an event subject.
func EventAddress(subject string) string { return strings.TrimPrefix(subject, EventPrefix) }
