package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus/config"
)

const sampleConf = `[broker]
urls = amqps://broker1.example.com:5671 amqps://broker2.example.com:5671
cert = /etc/koji-hub/plugins/client.pem
cacert = /etc/koji-hub/plugins/ca.pem
topic_prefix = koji
connect_timeout = 10
send_timeout = 60

[message]
extra_limit = -2048
ttl = 86400

[queue]
enabled = true
batch_size = 100
max_age = 24
`

func TestParseConfigReadsKojisSample(t *testing.T) {
	c, err := ParseConfig("protonmsg.conf", []byte(sampleConf))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URLs) != 2 || c.URLs[1] != "amqps://broker2.example.com:5671" || c.TopicPrefix != "topic://koji" ||
		c.ConnectTimeout != 10*time.Second || c.SendTimeout != time.Minute || c.ExtraLimit != 2048 ||
		c.TTL != 24*time.Hour || !c.QueueEnabled || c.QueueBatchSize != 100 || c.QueueMaxAge != 24*time.Hour || c.Shuffle {
		t.Fatalf("%+v", c)
	}
}

func TestTopicPrefixRule(t *testing.T) {
	for in, want := range map[string]string{"koji": "topic://koji", "topic://koji": "topic://koji", "/topic/koji": "/topic/koji"} {
		if got := NormalizeTopicPrefix(in); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}

func TestParseConfigRefusesBadInput(t *testing.T) {
	base := func(drop string, add ...string) string {
		var lines []string
		for _, l := range strings.Split(sampleConf, "\n") {
			if drop == "" || !strings.HasPrefix(l, drop) {
				lines = append(lines, l)
			}
		}
		return strings.Join(append(lines, add...), "\n")
	}
	tests := []struct{ name, text, want string }{
		{"no urls", base("urls"), "[broker] urls: required"},
		{"no prefix", base("topic_prefix"), "[broker] topic_prefix: required"},
		{"no connect_timeout", base("connect_timeout"), "[broker] connect_timeout: required"},
		{"bad url", strings.Replace(sampleConf, "amqps://broker1", "http://broker1", 1), "not an amqp:// or amqps:// URL"},
		{"cert without cacert", base("cacert"), "give both or neither"},
		{"bad timeout", strings.Replace(sampleConf, "send_timeout = 60", "send_timeout = soon", 1), "not an integer"},
		{"zero timeout", strings.Replace(sampleConf, "send_timeout = 60", "send_timeout = 0", 1), "positive number of seconds"},
		{"bad bool", strings.Replace(sampleConf, "enabled = true", "enabled = maybe", 1), "not a boolean"},
		{"bad ttl", strings.Replace(sampleConf, "ttl = 86400", "ttl = -1", 1), "[message] ttl"},
		{"bad batch", strings.Replace(sampleConf, "batch_size = 100", "batch_size = 0", 1), "batch_size: must be positive"},
		{"unknown option", strings.Replace(sampleConf, "max_age = 24", "max_age = 24\ncolour = blue", 1), "[queue] colour: unknown option"},
		{"unknown section", base("", "[extra]", "x = 1"), "unknown section [extra]"},
		{"no broker", "[queue]\nenabled = true\n", "no [broker] section"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("protonmsg.conf", []byte(tc.text))
			var pe *config.ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a ParseError containing %q", err, tc.want)
			}
		})
	}
}

func TestDeprecatedAgeOption(t *testing.T) {
	c, err := ParseConfig("p", []byte(strings.Replace(sampleConf, "max_age = 24", "age = 2", 1)))
	if err != nil || c.QueueMaxAge != 2*time.Hour {
		t.Fatalf("%v %v", c, err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sampleConf))
	f.Add([]byte("[broker]\nurls = amqp://x\ntopic_prefix = /topic/k\nconnect_timeout = 1\nsend_timeout = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz", data)
		if err != nil {
			var pe *config.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if len(c.URLs) == 0 || c.ConnectTimeout <= 0 || c.SendTimeout <= 0 || c.QueueBatchSize <= 0 || c.ExtraLimit < 0 ||
			!(strings.HasPrefix(c.TopicPrefix, "/topic/") || strings.HasPrefix(c.TopicPrefix, "topic://")) {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
	})
}
