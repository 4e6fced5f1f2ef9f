// Package bridge mirrors kojibus events to AMQP 1.0 brokers as Koji's
// protonmsg plugin does: same configuration file, same addresses,
// application properties and JSON bodies, but from a durable JetStream
// consumer, in order, none lost and none twice (see docs/bridge.md).
package bridge

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/kojibus/kojibus/bus/config"
)

// Config is Koji's protonmsg.conf.
type Config struct {
	URLs           []string
	Cert           string // client certificate and key, one PEM file
	CACert         string
	TopicPrefix    string // normalised: /topic/... or topic://... kept, else topic:// prepended
	ConnectTimeout time.Duration
	SendTimeout    time.Duration
	TestMode       bool
	TestModeFail   int // percent; accepted for compatibility, see docs/bridge.md
	// Shuffle tries the URLs in random order as protonmsg does; kojibus
	// keeps the given order unless [broker] shuffle = true (a kojibus option).
	Shuffle bool

	ExtraLimit int           // [message] extra_limit, 0 = unlimited
	TTL        time.Duration // [message] ttl, 0 = none

	QueueEnabled   bool
	QueueBatchSize int
	QueueMaxAge    time.Duration
}

// known lists the options protonmsg.conf may hold, per section: Koji reads
// the file strictly, so anything else is a mistake worth reporting.
var known = map[string][]string{
	"broker":  {"urls", "cert", "cacert", "topic_prefix", "connect_timeout", "send_timeout", "test_mode", "test_mode_fail", "shuffle"},
	"message": {"extra_limit", "ttl"},
	"queue":   {"enabled", "batch_size", "max_age", "age"},
}

// LoadConfig reads a protonmsg.conf file.
func LoadConfig(path string) (*Config, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return configFrom(f)
}

// ParseConfig parses protonmsg.conf text.
func ParseConfig(name string, data []byte) (*Config, error) {
	f, err := config.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return configFrom(f)
}

func configFrom(f *config.File) (*Config, error) {
	for _, name := range f.Sections() {
		opts, ok := known[name]
		if !ok {
			return nil, &config.ParseError{File: f.Name, Msg: fmt.Sprintf("unknown section [%s]", name)}
		}
		s := f.Section(name)
		for _, k := range s.Keys() {
			if !contains(opts, k) {
				return nil, &config.ParseError{File: f.Name, Msg: fmt.Sprintf("[%s] %s: unknown option", name, k)}
			}
		}
	}
	b := f.Section("broker")
	if b == nil {
		return nil, &config.ParseError{File: f.Name, Msg: "no [broker] section"}
	}
	c := &Config{}
	required := func(key string) (string, error) {
		v, ok := b.Get(key)
		if !ok || strings.TrimSpace(v) == "" {
			return "", &config.ParseError{File: f.Name, Msg: fmt.Sprintf("[broker] %s: required", key)}
		}
		return strings.TrimSpace(v), nil
	}
	urls, err := required("urls")
	if err != nil {
		return nil, err
	}
	for _, u := range strings.Fields(urls) {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "amqp" && p.Scheme != "amqps") || p.Host == "" {
			return nil, &config.ParseError{File: f.Name, Msg: fmt.Sprintf("[broker] urls: %q is not an amqp:// or amqps:// URL", u)}
		}
		c.URLs = append(c.URLs, u)
	}
	prefix, err := required("topic_prefix")
	if err != nil {
		return nil, err
	}
	c.TopicPrefix = NormalizeTopicPrefix(prefix)
	for _, d := range []struct {
		key string
		out *time.Duration
	}{{"connect_timeout", &c.ConnectTimeout}, {"send_timeout", &c.SendTimeout}} {
		if _, err := required(d.key); err != nil {
			return nil, err
		}
		n, err := b.Int(d.key, 0)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return nil, &config.ParseError{File: f.Name, Msg: fmt.Sprintf("[broker] %s: must be a positive number of seconds", d.key)}
		}
		*d.out = time.Duration(n) * time.Second
	}
	c.Cert = strings.TrimSpace(b.String("cert", ""))
	c.CACert = strings.TrimSpace(b.String("cacert", ""))
	if (c.Cert == "") != (c.CACert == "") {
		// protonmsg silently sends without TLS unless both are set; refuse instead.
		return nil, &config.ParseError{File: f.Name, Msg: "[broker] cert and cacert: give both or neither"}
	}
	if c.TestMode, err = b.Bool("test_mode", false); err != nil {
		return nil, err
	}
	if c.TestModeFail, err = b.Int("test_mode_fail", 0); err != nil {
		return nil, err
	}
	if c.Shuffle, err = b.Bool("shuffle", false); err != nil {
		return nil, err
	}
	m := f.Section("message")
	if c.ExtraLimit, err = m.Int("extra_limit", 0); err != nil {
		return nil, err
	}
	if c.ExtraLimit < 0 {
		c.ExtraLimit = -c.ExtraLimit // protonmsg applies abs()
	}
	ttl, err := m.Float("ttl", 0)
	if err != nil {
		return nil, err
	}
	if ttl < 0 || ttl > 1e9 {
		return nil, &config.ParseError{File: f.Name, Msg: "[message] ttl: must be a number of seconds >= 0"}
	}
	c.TTL = time.Duration(ttl * float64(time.Second))
	q := f.Section("queue")
	if c.QueueEnabled, err = q.Bool("enabled", false); err != nil {
		return nil, err
	}
	if c.QueueBatchSize, err = q.Int("batch_size", 100); err != nil {
		return nil, err
	}
	if c.QueueBatchSize <= 0 {
		return nil, &config.ParseError{File: f.Name, Msg: "[queue] batch_size: must be positive"}
	}
	ageKey := "max_age"
	if _, ok := q.Get("max_age"); !ok {
		ageKey = "age" // protonmsg's deprecated name
	}
	hours, err := q.Float(ageKey, 24)
	if err != nil {
		return nil, err
	}
	if hours <= 0 || hours > 1e6 {
		return nil, &config.ParseError{File: f.Name, Msg: fmt.Sprintf("[queue] %s: must be a positive number of hours", ageKey)}
	}
	c.QueueMaxAge = time.Duration(hours * float64(time.Hour))
	return c, nil
}

// NormalizeTopicPrefix applies protonmsg's rule: a prefix starting with
// /topic/ or topic:// is used as it is, anything else gets topic://.
func NormalizeTopicPrefix(p string) string {
	if strings.HasPrefix(p, "/topic/") || strings.HasPrefix(p, "topic://") {
		return p
	}
	return "topic://" + p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
