// Package bus is the contract between kojibus processes: subject names,
// headers, wire types, Koji's fault catalogue, the embedded NATS server, and
// the typed API client used by kojictl, builderd and tests.
package bus

import (
	"errors"
	"fmt"
)

// Fault codes are Koji's (koji/__init__.py): clients that switch on
// faultCode keep working against kojibus.
const (
	CodeGenericError       = 1000
	CodeLockError          = 1001
	CodeAuthError          = 1002
	CodeTagError           = 1003
	CodeActionNotAllowed   = 1004
	CodeBuildError         = 1005
	CodeAuthLockError      = 1006
	CodeAuthExpired        = 1007
	CodeSequenceError      = 1008
	CodeRetryError         = 1009
	CodePreBuildError      = 1010
	CodePostBuildError     = 1011
	CodeBuildrootError     = 1012
	CodeFunctionDeprecated = 1013
	CodeServerOffline      = 1014
	CodeLiveCDError        = 1015
	CodePluginError        = 1016
	CodeCallbackError      = 1017
	CodeApplianceError     = 1018
	CodeParameterError     = 1019
	CodeImportError        = 1020
	CodeConfigurationError = 1021
	CodeLiveMediaError     = 1022
	CodeGSSAPIAuthError    = 1023
	CodeNotAllowedImport   = 1024
	CodeServerUnavailable  = 1025
	CodeTaskAttemptStale   = 1100 // kojibus: a result from a superseded task attempt
	CodeConflict           = 1101 // kojibus: a concurrent write won; retry
	CodeTooManyRequests    = 1110 // kojibus: the caller has its fair share of the hub's workers and a full queue
	CodeReplyTooLarge      = 1111 // kojibus: the reply would exceed the NATS message limit; page the call
)

// CodeInsufficientResources is kojibus': the hub refuses writes because the
// disk of its data directory (or the NATS server's storage) is too full;
// reads and logins still answer, and writes resume by themselves once space
// is freed. Not Koji's ServerOffline (1014): the hub is not offline, and
// Koji's clients retry ServerOffline as if it were.
const CodeInsufficientResources = 1102

var faultNames = map[int]string{
	CodeGenericError:       "GenericError",
	CodeLockError:          "LockError",
	CodeAuthError:          "AuthError",
	CodeTagError:           "TagError",
	CodeActionNotAllowed:   "ActionNotAllowed",
	CodeBuildError:         "BuildError",
	CodeAuthLockError:      "AuthLockError",
	CodeAuthExpired:        "AuthExpired",
	CodeSequenceError:      "SequenceError",
	CodeRetryError:         "RetryError",
	CodePreBuildError:      "PreBuildError",
	CodePostBuildError:     "PostBuildError",
	CodeBuildrootError:     "BuildrootError",
	CodeFunctionDeprecated: "FunctionDeprecated",
	CodeServerOffline:      "ServerOffline",
	CodeLiveCDError:        "LiveCDError",
	CodePluginError:        "PluginError",
	CodeCallbackError:      "CallbackError",
	CodeApplianceError:     "ApplianceError",
	CodeParameterError:     "ParameterError",
	CodeImportError:        "ImportError",
	CodeConfigurationError: "ConfigurationError",
	CodeLiveMediaError:     "LiveMediaError",
	CodeGSSAPIAuthError:    "GSSAPIAuthError",
	CodeNotAllowedImport:   "NotAllowed",
	CodeServerUnavailable:  "ServerUnavailable",
	CodeTaskAttemptStale:   "TaskAttemptStale",
	CodeConflict:           "ConflictError",
	CodeTooManyRequests:    "TooManyRequests",
	CodeReplyTooLarge:      "ReplyTooLarge",

	CodeInsufficientResources: "InsufficientResources",
}

// FaultName returns Koji's exception name for a fault code.
func FaultName(code int) string {
	if n, ok := faultNames[code]; ok {
		return n
	}
	return "GenericError"
}

// Fault is a Koji fault: the typed error every API method returns and every
// client receives. It travels as {"code":..,"name":..,"message":..}.
type Fault struct {
	Code    int    `json:"code"`
	Name    string `json:"name"`
	Message string `json:"message"`
}

// Error renders the fault as the koji CLI prints it: "GenericError: No such tag: f30".
func (f *Fault) Error() string { return f.Name + ": " + f.Message }

// Is makes errors.Is match faults by code, so callers can test
// errors.Is(err, bus.ErrActionNotAllowed).
func (f *Fault) Is(target error) bool {
	t, ok := target.(*Fault)
	return ok && t.Code == f.Code && (t.Message == "" || t.Message == f.Message)
}

// NewFault builds a fault with Koji's name for code.
func NewFault(code int, format string, args ...any) *Fault {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Fault{Code: code, Name: FaultName(code), Message: msg}
}

// Sentinels for errors.Is; they match any fault with the same code.
var (
	ErrGeneric          = &Fault{Code: CodeGenericError}
	ErrAuth             = &Fault{Code: CodeAuthError}
	ErrAuthExpired      = &Fault{Code: CodeAuthExpired}
	ErrActionNotAllowed = &Fault{Code: CodeActionNotAllowed}
	ErrParameter        = &Fault{Code: CodeParameterError}
	ErrLock             = &Fault{Code: CodeLockError}
	ErrTag              = &Fault{Code: CodeTagError}
	ErrTaskAttemptStale = &Fault{Code: CodeTaskAttemptStale}
	ErrConflict         = &Fault{Code: CodeConflict}
	ErrTooManyRequests  = &Fault{Code: CodeTooManyRequests}
	ErrReplyTooLarge    = &Fault{Code: CodeReplyTooLarge}

	// ErrInsufficientResources: a write refused for lack of disk space.
	ErrInsufficientResources = &Fault{Code: CodeInsufficientResources}
)

// GenericError is Koji's catch-all fault (code 1000).
func GenericError(format string, args ...any) *Fault {
	return NewFault(CodeGenericError, format, args...)
}

// ParameterError reports a wrong argument (code 1019).
func ParameterError(format string, args ...any) *Fault {
	return NewFault(CodeParameterError, format, args...)
}

// ActionNotAllowed reports a missing permission or a policy denial (code 1004).
func ActionNotAllowed(format string, args ...any) *Fault {
	return NewFault(CodeActionNotAllowed, format, args...)
}

// AuthError reports a failed or missing login (code 1002).
func AuthError(format string, args ...any) *Fault {
	return NewFault(CodeAuthError, format, args...)
}

// AsFault converts any error into a fault: faults pass through, anything else
// becomes a GenericError carrying its text.
func AsFault(err error) *Fault {
	if err == nil {
		return nil
	}
	var f *Fault
	if errors.As(err, &f) {
		return f
	}
	return GenericError("%s", err.Error())
}
