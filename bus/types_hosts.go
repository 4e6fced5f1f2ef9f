package bus

// Result shapes of the host side of the API (getHost, listHosts and the
// kojibus host credentials), field for field Koji's.

// Host is getHost's and listHosts' element.
type Host struct {
	ID          int64    `json:"id"`
	UserID      int64    `json:"user_id"`
	Name        string   `json:"name"`
	UpdateTS    *float64 `json:"update_ts"`
	Ready       bool     `json:"ready"`
	TaskLoad    float64  `json:"task_load"`
	Arches      string   `json:"arches"`
	Capacity    float64  `json:"capacity"`
	Description *string  `json:"description"`
	Comment     *string  `json:"comment"`
	Enabled     bool     `json:"enabled"`
}

// HostCredentials is createHostCredentials' answer: what builderd needs to
// log in as the host (kojictl add-host --creds-out writes it as a profile).
type HostCredentials struct {
	Host     string `json:"host"`
	User     string `json:"user"`
	Password string `json:"password"`
	Server   string `json:"server"`
}
