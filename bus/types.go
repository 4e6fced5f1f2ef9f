package bus

// Result shapes of the API, field for field Koji's
// (reference: koji-hub-response-shapes.json). The hub stores and returns
// these; clients decode into them.

// User types and statuses, Koji's numbers.
const (
	UserTypeNormal = 0
	UserTypeHost   = 1
	UserTypeGroup  = 2

	UserStatusNormal  = 0
	UserStatusBlocked = 1
)

// User is getUser's answer.
type User struct {
	ID            int64    `json:"id"`
	Name          string   `json:"name"`
	Status        int      `json:"status"`
	UserType      int      `json:"usertype"`
	KrbPrincipals []string `json:"krb_principals"`
}

// LoggedInUser is getLoggedInUser's answer.
type LoggedInUser struct {
	User
	AuthType     int     `json:"authtype"`
	KrbPrincipal *string `json:"krb_principal"`
}

// Session is login's answer: what later calls send in the Koji-Session header.
type Session struct {
	ID  int64  `json:"session-id"`
	Key string `json:"session-key"`
}

// Header renders the session as the Koji-Session header value.
func (s Session) Header() string { return formatInt(s.ID) + ":" + s.Key }

// Permission is listPermissions' element.
type Permission struct {
	ID          int64   `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
}

// Auth types (koji.AUTHTYPES).
const (
	AuthTypeNormal = 0
	AuthTypeKerb   = 1
	AuthTypeSSL    = 2
)

// Channel is getChannel's answer.
type Channel struct {
	ID          int64   `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	Enabled     bool    `json:"enabled"`
	Comment     *string `json:"comment"`
}
