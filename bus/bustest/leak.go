package bustest

import "go.uber.org/goleak"

// LeakOptions are the goroutines goleak must ignore in kojibus tests: the
// embedded server's background routines, and nats.go's async-publish
// watcher, which never ends when an object store write races the connection
// closing (the channel it waits on is nil then).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	}
}
