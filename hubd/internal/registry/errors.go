package registry

import "github.com/kojibus/kojibus/bus"

func paramErr(format string, args ...any) error { return bus.ParameterError(format, args...) }
