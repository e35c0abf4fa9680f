package admin

// Eclipse Hono's Device Registry Management HTTP API (version 1.x) under
// /v1: tenants, devices and credentials, wire-compatible with Hono's
// OpenAPI document (../shared/reference/hono-device-registry-v1.yaml) and
// with the behaviour of Hono's own registries where the document leaves a
// choice (the status of an empty search, unquoted ETags, ...). See
// docs/registry.md.
//
// Differences from the /api routes, all Hono's: errors are {"error": "..."}
// (not {"error":{"code","message"}}), creates answer 201 with {"id"} and a
// Location, updates 204, and every resource carries an ETag that If-Match
// may name. Access (access.go, the rule of the /api routes): the platform
// administrator manages everything; a tenant-admin manages its own
// tenant's devices and credentials and may read and update (not create,
// delete or list, nor change its limits) its own tenant; an operator reads
// its own tenant, devices and credentials.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// Registry keeps devices and credentials (*registry.Store).
type Registry interface {
	CreateDevice(ctx context.Context, tenantName, id string, d *registry.Device) (string, string, error)
	Device(ctx context.Context, tenantName, id string) (*registry.Device, string, error)
	UpdateDevice(ctx context.Context, tenantName, id string, d *registry.Device, ifMatch string) (string, error)
	DeleteDevice(ctx context.Context, tenantName, id, ifMatch string) error
	DeleteDevices(ctx context.Context, tenantName string) error
	Devices(ctx context.Context, tenantName string, q registry.Query) (registry.Page, error)
	Credentials(ctx context.Context, tenantName, id string) ([]registry.Credential, string, error)
	SetCredentials(ctx context.Context, tenantName, id string, cs []registry.Credential, ifMatch string) (string, error)
}

// Hono's paging limits (DelegatingDeviceManagementHttpEndpoint).
const (
	honoDefaultPageSize = 30
	honoMaxPageSize     = 200
)

// honoDeviceIDRE is Hono's default device id pattern
// (RegistryManagementConstants.DEFAULT_REGEX_DEVICE_ID), with a length
// bound of ours.
var honoDeviceIDRE = regexp.MustCompile(`^[a-zA-Z0-9_.:=-]{1,256}$`)

// HonoError is the body of every /v1 error response (Hono's Error schema).
type HonoError struct {
	Error string `json:"error"`
}

// honoJSONType is the content type Hono's registry answers with.
const honoJSONType = "application/json; charset=utf-8"

func honoWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", honoJSONType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// honoError writes Hono's error body; 401 also carries the challenge.
func honoError(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="throng", charset="UTF-8"`)
	}
	honoWriteJSON(w, status, HonoError{Error: msg})
}

// setETag sets the resource version. Hono sends it as is, unquoted
// ("etag: 89d40d26-..."), and compares If-Match as is; see ifMatch.
func setETag(w http.ResponseWriter, version string) {
	if version != "" {
		w.Header().Set("ETag", version)
	}
}

// ifMatch returns the version an If-Match header asks for: Hono's clients
// send back the unquoted ETag; an RFC 9110 client quotes it (and may mark
// it weak), so quotes and W/ are removed. "*" (any current version) asks
// for nothing.
func ifMatch(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "*" {
		return ""
	}
	return v
}

// honoFail renders an error of the registry, the router or the tenant
// store with Hono's status codes.
func (s *Server) honoFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, tenant.ErrNotFound):
		honoError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, registry.ErrExists), errors.Is(err, tenant.ErrExists):
		honoError(w, http.StatusConflict, err.Error())
	case errors.Is(err, registry.ErrVersionMismatch):
		honoError(w, http.StatusPreconditionFailed, err.Error())
	case errors.Is(err, registry.ErrLimit), errors.Is(err, tenant.ErrLimit):
		// Hono answers a registration limit with 403.
		honoError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, tenant.ErrInvalid):
		honoError(w, http.StatusBadRequest, err.Error())
	default:
		s.log.Error("registry request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		honoError(w, http.StatusInternalServerError, "internal error")
	}
}

// requireRegistryUser authenticates a /v1 request: users with a role of
// the admin API pass (each handler then checks the tenant with allow).
func (s *Server) requireRegistryUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal(r), true // WithPrincipal: authenticated in-process
		if _, _, given := r.BasicAuth(); !given && p == nil {
			honoError(w, http.StatusUnauthorized, "authentication required")
			return
		}
		if p == nil {
			p, ok = s.authenticate(r)
		}
		if !ok {
			honoError(w, http.StatusUnauthorized, "bad user name or password")
			return
		}
		if !p.MayUseAdminAPI() {
			honoError(w, http.StatusForbidden, refusal(p, "", auth.ScopePlatform))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// v1Access is what a /v1 request does to a tenant.
type v1Access int

const (
	accessTenantRead    v1Access = iota // GET /v1/tenants/{t}
	accessTenantWrite                   // PUT /v1/tenants/{t}
	accessTenantManage                  // create, delete, search tenants: the platform administrator
	accessTenantDevices                 // devices and credentials of the tenant: GET reads, others write
)

// allow checks the path's tenant id against throng's name rule (400) and
// the principal's rights to it (403), by the rule of the /api routes
// (refusal). Nobody learns anything about a tenant it may not read, not
// even whether it exists.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, tenantName string, a v1Access) bool {
	if tenantName != "" {
		if err := tenant.ValidateName(tenantName); err != nil {
			honoError(w, http.StatusBadRequest, fmt.Sprintf(
				"invalid tenant id %q: throng tenant ids are 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit", tenantName))
			return false
		}
	}
	p := principal(r)
	if p == nil {
		honoError(w, http.StatusUnauthorized, "authentication required")
		return false
	}
	var scope auth.Scope
	switch a {
	case accessTenantRead:
		scope = auth.ScopeTenantRead
	case accessTenantWrite:
		scope = auth.ScopeTenantWrite
	case accessTenantManage:
		scope = auth.ScopePlatform
	default:
		scope = scopeOf(r.Method)
	}
	if msg := refusal(p, tenantName, scope); msg != "" {
		honoError(w, http.StatusForbidden, msg)
		return false
	}
	return true
}

// registry returns the device registry or writes 404 (Hono: an API a
// registry does not implement answers 404).
func (s *Server) registry(w http.ResponseWriter) (Registry, bool) {
	if s.cfg.Registry == nil {
		honoError(w, http.StatusNotFound, "the device registry is not enabled")
		return nil, false
	}
	return s.cfg.Registry, true
}

// readBody reads a request body of at most MaxBodyBytes; it writes the
// error itself (413).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > MaxBodyBytes {
		honoError(w, http.StatusRequestEntityTooLarge, "request body larger than 1 MiB")
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			honoError(w, http.StatusRequestEntityTooLarge, "request body larger than 1 MiB")
		} else {
			honoError(w, http.StatusBadRequest, "cannot read the request body")
		}
		return nil, false
	}
	return bytes.TrimSpace(b), true
}

// honoDecode decodes a JSON body into v, refusing unknown fields (Hono's
// schemas have additionalProperties false) and trailing data. An empty
// body is allowed when optional (Hono's create operations) and leaves v
// as is.
func honoDecode(w http.ResponseWriter, r *http.Request, v any, optional bool, what string) bool {
	b, ok := readBody(w, r)
	if !ok {
		return false
	}
	if len(b) == 0 {
		if optional {
			return true
		}
		honoError(w, http.StatusBadRequest, "empty body: the request needs a JSON "+what)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON value")
	}
	if err != nil {
		honoError(w, http.StatusBadRequest, fmt.Sprintf("request does not contain a valid %s: %s", what, bodyProblem(err)))
		return false
	}
	return true
}

// ---- tenants

// tenantVersion is a tenant's resource version: the tenant store keeps no
// revision, so the version is a digest of the stored definition (the whole
// throng tenant, so a change through /api changes it too).
func tenantVersion(t *tenant.Tenant) string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// honoTenantView is the Hono Tenant of a throng tenant: its IoT settings,
// or Hono's defaults for a tenant that has none; "enabled" is always
// given. Certificates are write-only (Hono returns the values derived from
// them).
func honoTenantView(t *tenant.Tenant) *tenant.IoT {
	var v tenant.IoT
	if t.IoT != nil {
		v = *t.IoT
	}
	enabled := v.IsEnabled()
	v.Enabled = &enabled
	if len(v.TrustedCA) > 0 {
		cas := make([]tenant.TrustedCA, len(v.TrustedCA))
		copy(cas, v.TrustedCA)
		for i := range cas {
			cas[i].Cert = nil
		}
		v.TrustedCA = cas
	}
	return &v
}

// honoTenantWithID is an element of a tenant search result.
type honoTenantWithID struct {
	ID string `json:"id"`
	*tenant.IoT
}

func (s *Server) v1CreateTenant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("tenantId")
	if !s.allow(w, r, id, accessTenantManage) {
		return
	}
	var iot tenant.IoT
	if !honoDecode(w, r, &iot, true, "Tenant object") {
		return
	}
	if id == "" {
		id = registry.NewUUID()
	}
	if err := s.checkHonoTenant(id, &iot, nil); err != nil {
		s.honoFail(w, r, err)
		return
	}
	if _, exists := s.cfg.Store.Tenant(id); exists {
		honoError(w, http.StatusConflict, "tenant with given identifier already exists")
		return
	}
	t := &tenant.Tenant{Name: id, AutoCreate: []tenant.AutoCreateRule{}, IoT: &iot}
	if err := s.cfg.Router.CreateTenant(r.Context(), t); err != nil {
		s.honoFail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Tenant(id); ok {
		t = stored
	}
	w.Header().Set("Location", "/v1/tenants/"+url.PathEscape(id))
	setETag(w, tenantVersion(t))
	honoWriteJSON(w, http.StatusCreated, map[string]string{"id": id})
}

// honoTenant returns the path's tenant after the access check, or writes
// the error.
func (s *Server) honoTenant(w http.ResponseWriter, r *http.Request, a v1Access) (*tenant.Tenant, bool) {
	name := r.PathValue("tenantId")
	if !s.allow(w, r, name, a) {
		return nil, false
	}
	t, ok := s.cfg.Store.Tenant(name)
	if !ok {
		honoError(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", name))
	}
	return t, ok
}

func (s *Server) v1GetTenant(w http.ResponseWriter, r *http.Request) {
	t, ok := s.honoTenant(w, r, accessTenantRead)
	if !ok {
		return
	}
	setETag(w, tenantVersion(t))
	honoWriteJSON(w, http.StatusOK, honoTenantView(t))
}

func (s *Server) v1UpdateTenant(w http.ResponseWriter, r *http.Request) {
	old, ok := s.honoTenant(w, r, accessTenantWrite)
	if !ok {
		return
	}
	var iot tenant.IoT
	if !honoDecode(w, r, &iot, false, "Tenant object") {
		return
	}
	if v := ifMatch(r); v != "" && v != tenantVersion(old) {
		honoError(w, http.StatusPreconditionFailed, "resource version mismatch")
		return
	}
	if p := principal(r); !p.IsAdmin() && !sameLimits(old.IoT, &iot) {
		honoError(w, http.StatusForbidden, "only the platform administrator may change a tenant's registration-limits and resource-limits")
		return
	}
	if err := s.checkHonoTenant(old.Name, &iot, old.IoT); err != nil {
		if errors.Is(err, tenant.ErrExists) && !principal(r).IsAdmin() {
			// Hono: 403 when the conflict is with a tenant the client
			// may not read.
			honoError(w, http.StatusForbidden, "the alias or a trust anchor's subject DN is not available")
			return
		}
		s.honoFail(w, r, err)
		return
	}
	t := *old // the store's copy is shared: change a copy
	t.IoT = &iot
	if err := s.cfg.Router.UpdateTenant(r.Context(), &t); err != nil {
		s.honoFail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Tenant(t.Name); ok {
		setETag(w, tenantVersion(stored))
	}
	w.WriteHeader(http.StatusNoContent)
}

// sameLimits reports whether an update keeps a tenant's limits.
func sameLimits(old, nu *tenant.IoT) bool {
	var o tenant.IoT
	if old != nil {
		o = *old
	}
	return canonical(o.RegistrationLimits, o.ResourceLimits) == canonical(nu.RegistrationLimits, nu.ResourceLimits)
}

// canonical renders values as JSON with objects' keys sorted and no
// spaces, so that equal settings compare equal however a client wrote
// them.
func canonical(vs ...any) string {
	b, _ := json.Marshal(vs)
	var v any
	_ = json.Unmarshal(b, &v)
	b, _ = json.Marshal(v)
	return string(b)
}

func (s *Server) v1DeleteTenant(w http.ResponseWriter, r *http.Request) {
	t, ok := s.honoTenant(w, r, accessTenantManage)
	if !ok {
		return
	}
	if v := ifMatch(r); v != "" && v != tenantVersion(t) {
		honoError(w, http.StatusPreconditionFailed, "resource version mismatch")
		return
	}
	if t.Name == tenant.Default {
		honoError(w, http.StatusForbidden, "the default tenant cannot be deleted")
		return
	}
	if err := s.deleteTenantDevices(r.Context(), t.Name); err != nil {
		s.honoFail(w, r, err)
		return
	}
	if err := s.cfg.Router.DeleteTenant(r.Context(), t.Name); err != nil {
		s.honoFail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteTenantDevices removes a tenant's devices and credentials before
// the tenant is deleted (through /v1 or /api): a failure then leaves the
// tenant, not devices without one, which a new tenant of the same name
// would inherit.
func (s *Server) deleteTenantDevices(ctx context.Context, name string) error {
	if s.cfg.Registry == nil {
		return nil
	}
	if err := s.cfg.Registry.DeleteDevices(ctx, name); err != nil && !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	return nil
}

func (s *Server) v1SearchTenants(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, r, "", accessTenantManage) {
		return
	}
	q, ok := parseSearch(w, r, false)
	if !ok {
		return
	}
	var items []honoTenantWithID
	var docs []map[string]any
	for _, t := range s.cfg.Store.Tenants() {
		it := honoTenantWithID{ID: t.Name, IoT: honoTenantView(t)}
		doc := jsonDoc(it)
		if !registry.Match(doc, q.Filters) {
			continue
		}
		items = append(items, it)
		docs = append(docs, doc)
	}
	if len(items) == 0 {
		// Hono's registries answer an empty search with 404.
		honoError(w, http.StatusNotFound, "no tenants found")
		return
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return registry.Less(docs[idx[a]], docs[idx[b]], q.Sort) })
	res := struct {
		Total  int                `json:"total"`
		Result []honoTenantWithID `json:"result"`
	}{Total: len(items), Result: []honoTenantWithID{}}
	for i := q.PageOffset; i < len(idx) && i < q.PageOffset+q.PageSize; i++ {
		res.Result = append(res.Result, items[idx[i]])
	}
	honoWriteJSON(w, http.StatusOK, res)
}

// ---- devices

// deviceTenant checks access to the path's tenant and that it exists.
func (s *Server) deviceTenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("tenantId")
	if !s.allow(w, r, name, accessTenantDevices) {
		return "", false
	}
	if _, ok := s.cfg.Store.Tenant(name); !ok {
		honoError(w, http.StatusNotFound, fmt.Sprintf("tenant %q does not exist", name))
		return "", false
	}
	return name, true
}

// deviceID returns the path's device id if it matches Hono's pattern.
func deviceID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("deviceId")
	if !honoDeviceIDRE.MatchString(id) {
		honoError(w, http.StatusBadRequest, fmt.Sprintf("invalid device ID: %q (want 1 to 256 of a-z A-Z 0-9 - _ . : =)", id))
		return "", false
	}
	return id, true
}

// checkDevice applies Hono's rules for a device body; the status is the
// registry's and is ignored on input.
func checkDevice(d *registry.Device) error {
	d.Status = nil
	if len(d.MemberOf) > 0 && (len(d.Via) > 0 || len(d.ViaGroups) > 0) {
		return fmt.Errorf("%w: 'memberOf' must not be set together with 'via' or 'viaGroups'", registry.ErrInvalid)
	}
	return nil
}

func (s *Server) v1CreateDevice(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	id := ""
	if r.PathValue("deviceId") != "" {
		if id, ok = deviceID(w, r); !ok {
			return
		}
	}
	var d registry.Device
	if !honoDecode(w, r, &d, true, "Device object") {
		return
	}
	if err := checkDevice(&d); err != nil {
		s.honoFail(w, r, err)
		return
	}
	id, version, err := reg.CreateDevice(r.Context(), ten, id, &d)
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/devices/"+url.PathEscape(ten)+"/"+url.PathEscape(id))
	setETag(w, version)
	honoWriteJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func (s *Server) v1GetDevice(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	d, version, err := reg.Device(r.Context(), ten, id)
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	setETag(w, version)
	honoWriteJSON(w, http.StatusOK, d)
}

func (s *Server) v1UpdateDevice(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	var d registry.Device
	if !honoDecode(w, r, &d, false, "Device object") {
		return
	}
	if err := checkDevice(&d); err != nil {
		s.honoFail(w, r, err)
		return
	}
	version, err := reg.UpdateDevice(r.Context(), ten, id, &d, ifMatch(r))
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	setETag(w, version)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) v1DeleteDevice(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	// Hono deletes a device of a tenant that no longer exists too (404
	// then comes from the device).
	ten := r.PathValue("tenantId")
	if !s.allow(w, r, ten, accessTenantDevices) {
		return
	}
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	if err := reg.DeleteDevice(r.Context(), ten, id, ifMatch(r)); err != nil {
		s.honoFail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) v1DeleteDevices(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten := r.PathValue("tenantId")
	if !s.allow(w, r, ten, accessTenantDevices) {
		return
	}
	// Hono answers 204 for a tenant that does not exist (nothing to do).
	if err := reg.DeleteDevices(r.Context(), ten); err != nil && !errors.Is(err, registry.ErrNotFound) {
		s.honoFail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) v1SearchDevices(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	q, ok := parseSearch(w, r, true)
	if !ok {
		return
	}
	page, err := reg.Devices(r.Context(), ten, q)
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	if page.Total == 0 {
		// Hono's registries answer an empty search with 404.
		honoError(w, http.StatusNotFound, "no devices found")
		return
	}
	if page.Result == nil {
		page.Result = []registry.DeviceWithID{}
	}
	honoWriteJSON(w, http.StatusOK, page)
}

// parseSearch reads Hono's search parameters: pageSize (1 to 200, default
// 30), pageOffset (default 0), filterJson and sortJson (each may repeat)
// and, for devices, isGateway (filterJson is then ignored, as Hono
// documents).
func parseSearch(w http.ResponseWriter, r *http.Request, devices bool) (registry.Query, bool) {
	qs := r.URL.Query()
	q := registry.Query{PageSize: honoDefaultPageSize}
	bad := func(name, value, why string) (registry.Query, bool) {
		honoError(w, http.StatusBadRequest, fmt.Sprintf("request parameter [name: %s, value: %s] failed validation: %s", name, value, why))
		return q, false
	}
	if v := qs.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > honoMaxPageSize {
			return bad("pageSize", v, fmt.Sprintf("want an integer from 1 to %d", honoMaxPageSize))
		}
		q.PageSize = n
	}
	if v := qs.Get("pageOffset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return bad("pageOffset", v, "want an integer of at least 0")
		}
		q.PageOffset = n
	}
	for _, v := range qs["filterJson"] {
		var f registry.Filter
		if err := strictJSON(v, &f); err != nil {
			return bad("filterJson", v, err.Error())
		}
		if !strings.HasPrefix(f.Field, "/") {
			return bad("filterJson", v, "field must be a JSON pointer such as /ext/brand")
		}
		if len(f.Value) == 0 || string(f.Value) == "null" {
			return bad("filterJson", v, "value is required")
		}
		if f.Op != "" && f.Op != "eq" {
			return bad("filterJson", v, `op must be "eq"`)
		}
		q.Filters = append(q.Filters, f)
	}
	for _, v := range qs["sortJson"] {
		var so registry.Sort
		if err := strictJSON(v, &so); err != nil {
			return bad("sortJson", v, err.Error())
		}
		if !strings.HasPrefix(so.Field, "/") {
			return bad("sortJson", v, "field must be a JSON pointer such as /ext/brand")
		}
		if so.Direction != "" && so.Direction != "asc" && so.Direction != "desc" {
			return bad("sortJson", v, `direction must be "asc" or "desc"`)
		}
		q.Sort = append(q.Sort, so)
	}
	if devices {
		if v := qs.Get("isGateway"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("isGateway", v, "want true or false")
			}
			q.IsGateway = &b
			q.Filters = nil
		}
	}
	return q, true
}

func strictJSON(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(bodyProblem(err))
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// ---- tenant search helpers (tenants are few: filtered and sorted here;
// devices are searched by the registry)

func jsonDoc(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// ---- credentials

// honoCredential is a credential as the API accepts it: for x509-cert,
// Hono also takes the device's certificate ("cert") and derives the
// auth-id and the secret's validity from it.
type honoCredential struct {
	registry.Credential
	Cert []byte `json:"cert,omitempty"`
}

func (s *Server) v1GetCredentials(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	cs, version, err := reg.Credentials(r.Context(), ten, id)
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	if cs == nil {
		cs = []registry.Credential{}
	}
	// The registry returns metadata only; make sure of it here too:
	// confidential values never leave through the API.
	for i := range cs {
		if cs[i].Secrets == nil {
			cs[i].Secrets = []registry.Secret{}
		}
		for j := range cs[i].Secrets {
			sec := &cs[i].Secrets[j]
			sec.PwdPlain, sec.PwdHash, sec.Salt = "", "", nil
			if cs[i].Type == registry.TypePSK {
				sec.Key = nil
			}
		}
	}
	setETag(w, version)
	honoWriteJSON(w, http.StatusOK, cs)
}

func (s *Server) v1SetCredentials(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.registry(w)
	if !ok {
		return
	}
	ten, ok := s.deviceTenant(w, r)
	if !ok {
		return
	}
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	if len(b) == 0 || b[0] != '[' {
		honoError(w, http.StatusBadRequest, "request body does not contain JSON array")
		return
	}
	var in []honoCredential
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		msg := "unexpected data after the JSON array"
		if err != nil {
			msg = bodyProblem(err)
		}
		honoError(w, http.StatusBadRequest, "request body does not contain valid Credentials objects: "+msg)
		return
	}
	t, _ := s.cfg.Store.Tenant(ten)
	cs := make([]registry.Credential, 0, len(in))
	for i := range in {
		c, err := checkCredential(t, &in[i])
		if err != nil {
			honoError(w, http.StatusBadRequest, fmt.Sprintf("credentials[%d]: %v", i, err))
			return
		}
		cs = append(cs, c)
	}
	seen := map[[2]string]bool{}
	for _, c := range cs {
		k := [2]string{c.Type, c.AuthID}
		if seen[k] {
			honoError(w, http.StatusBadRequest, fmt.Sprintf("credentials of type %q and auth-id %q given twice", c.Type, c.AuthID))
			return
		}
		seen[k] = true
	}
	version, err := reg.SetCredentials(r.Context(), ten, id, cs, ifMatch(r))
	if err != nil {
		s.honoFail(w, r, err)
		return
	}
	setETag(w, version)
	w.WriteHeader(http.StatusNoContent)
}

// checkCredential applies the rules of Hono's credential schemas before
// the registry stores (and hashes) them.
func checkCredential(t *tenant.Tenant, hc *honoCredential) (registry.Credential, error) {
	c := hc.Credential
	switch c.Type {
	case registry.TypePassword, registry.TypePSK, registry.TypeRPK, registry.TypeX509:
	case "":
		return c, errors.New("type is required")
	default:
		return c, fmt.Errorf("unknown type %q (want hashed-password, x509-cert, psk or rpk)", c.Type)
	}
	if len(hc.Cert) > 0 {
		if c.Type != registry.TypeX509 {
			return c, errors.New("cert is only allowed for type x509-cert")
		}
		if err := fromClientCert(t, &c, hc.Cert); err != nil {
			return c, err
		}
	}
	if c.AuthID == "" {
		return c, errors.New("auth-id is required")
	}
	if len(c.AuthID) > 1024 {
		return c, errors.New("auth-id is longer than 1024 bytes")
	}
	if len(c.Secrets) == 0 {
		return c, errors.New("secrets must not be empty")
	}
	if c.Type == registry.TypeX509 && len(c.Secrets) > 1 {
		return c, errors.New("x509-cert credentials have exactly one secret")
	}
	ids := map[string]bool{}
	for j := range c.Secrets {
		sec := &c.Secrets[j]
		if sec.ID != "" {
			if ids[sec.ID] {
				return c, fmt.Errorf("secrets[%d]: id %q given twice", j, sec.ID)
			}
			ids[sec.ID] = true
		}
		if sec.NotBefore != nil && sec.NotAfter != nil && sec.NotAfter.Before(*sec.NotBefore) {
			return c, fmt.Errorf("secrets[%d]: not-after is before not-before", j)
		}
		// A secret with an id and nothing confidential keeps the stored
		// one's confidential values (Hono's patch mode); the registry
		// checks the id.
		switch c.Type {
		case registry.TypePassword:
			switch {
			case sec.PwdPlain != "":
				if len(sec.PwdPlain) > 72 {
					// bcrypt uses at most 72 bytes; refuse rather than truncate.
					return c, fmt.Errorf("secrets[%d]: pwd-plain is longer than 72 bytes", j)
				}
				// Hono ignores the hash properties when pwd-plain is given.
				sec.HashFunction, sec.PwdHash, sec.Salt = "", "", nil
			case sec.PwdHash != "":
				switch sec.HashFunction {
				case "bcrypt":
					if !strings.HasPrefix(sec.PwdHash, "$2a$") {
						return c, fmt.Errorf("secrets[%d]: a bcrypt pwd-hash must start with $2a$", j)
					}
				case "", "sha-256", "sha-512":
					if sec.HashFunction == "" {
						sec.HashFunction = "sha-256" // Hono's default
					}
				default:
					return c, fmt.Errorf("secrets[%d]: unknown hash-function %q (want bcrypt, sha-256 or sha-512)", j, sec.HashFunction)
				}
			case sec.ID == "":
				return c, fmt.Errorf("secrets[%d]: a hashed-password secret needs pwd-plain or pwd-hash (or the id of a stored secret)", j)
			}
		case registry.TypePSK:
			if len(sec.Key) == 0 && sec.ID == "" {
				return c, fmt.Errorf("secrets[%d]: a psk secret needs a key", j)
			}
		case registry.TypeRPK:
			if len(sec.Key) == 0 && len(sec.Cert) == 0 && sec.ID == "" {
				return c, fmt.Errorf("secrets[%d]: an rpk secret needs a key or a cert", j)
			}
			if err := rpkSecret(sec); err != nil {
				return c, fmt.Errorf("secrets[%d]: %v", j, err)
			}
		}
		if c.Type != registry.TypePassword && (sec.PwdPlain != "" || sec.PwdHash != "" || len(sec.Salt) > 0 || sec.HashFunction != "") {
			return c, fmt.Errorf("secrets[%d]: password fields are only allowed for type hashed-password", j)
		}
	}
	return c, nil
}
