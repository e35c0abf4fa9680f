package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/registry"
)

// Devices and credentials go through Hono's device registry API (/v1),
// as the admin API serves it.

const devicePageSize = 50

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	if offset < 0 {
		offset = 0
	}
	path := fmt.Sprintf("/v1/devices/%s?pageSize=%d&pageOffset=%d", esc(t), devicePageSize, offset)
	if q != "" {
		pattern := q
		if !strings.ContainsAny(q, "*?") {
			pattern = "*" + q + "*"
		}
		f, _ := json.Marshal(registry.Filter{Field: "/id", Value: mustJSON(pattern)})
		path += "&filterJson=" + esc(string(f))
	}
	var pg registry.Page
	data := map[string]any{"Q": q, "Offset": offset}
	if err := s.call(r, http.MethodGet, path, nil, &pg); err != nil && !notFound(err) {
		s.fail(w, r, err)
		return
	}
	// Hono answers an empty search with 404: no devices.
	data["Page"] = pg
	if offset+devicePageSize < pg.Total {
		data["NextOffset"] = offset + devicePageSize
	}
	if offset > 0 {
		prev := offset - devicePageSize
		if prev < 0 {
			prev = 0
		}
		data["PrevOffset"] = strconv.Itoa(prev)
	}
	s.render(w, r, http.StatusOK, "devices", &page{Title: "Devices of " + t, Nav: "devices", Tenant: t, Data: data})
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	id := strings.TrimSpace(r.PostFormValue("id"))
	if id == "" {
		s.renderError(w, r, nil, http.StatusBadRequest, "A device id is required.")
		return
	}
	if err := s.call(r, http.MethodPost, "/v1/devices/"+esc(t)+"/"+esc(id), registry.Device{}, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	msg := fmt.Sprintf("Device %s created.", id)
	if authID, pw := strings.TrimSpace(r.PostFormValue("authId")), r.PostFormValue("password"); pw != "" {
		if authID == "" {
			authID = id
		}
		if err := s.setPassword(r, t, id, authID, pw); err != nil {
			s.fail(w, r, err)
			return
		}
		msg = fmt.Sprintf("Device %s created with password credentials for auth-id %s.", id, authID)
	}
	s.done(w, r, "/t/"+esc(t)+"/device/"+esc(id), msg)
}

// setPassword adds (or replaces) the device's hashed-password credential
// for authID, keeping its other credentials.
func (s *Server) setPassword(r *http.Request, t, id, authID, pw string) error {
	var creds []registry.Credential
	if err := s.call(r, http.MethodGet, "/v1/credentials/"+esc(t)+"/"+esc(id), nil, &creds); err != nil && !notFound(err) {
		return err
	}
	kept := []registry.Credential{}
	for _, c := range creds {
		if c.Type == registry.TypePassword && c.AuthID == authID {
			continue
		}
		// The API returns secrets without their hashes; an entry with the
		// secret's id keeps the stored secret.
		kept = append(kept, c)
	}
	kept = append(kept, registry.Credential{Type: registry.TypePassword, AuthID: authID, Secrets: []registry.Secret{{PwdPlain: pw}}})
	return s.call(r, http.MethodPut, "/v1/credentials/"+esc(t)+"/"+esc(id), kept, nil)
}

type deviceView struct {
	registry.Device
	Creds []registry.Credential
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	t, id := r.PathValue("tenant"), r.PathValue("id")
	var d deviceView
	if err := s.call(r, http.MethodGet, "/v1/devices/"+esc(t)+"/"+esc(id), nil, &d.Device); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.call(r, http.MethodGet, "/v1/credentials/"+esc(t)+"/"+esc(id), nil, &d.Creds); err != nil && !notFound(err) {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "device", &page{Title: "Device " + id, Nav: "devices", Tenant: t, Data: map[string]any{"ID": id, "D": d}})
}

func (s *Server) deviceAction(w http.ResponseWriter, r *http.Request) {
	t, id := r.PathValue("tenant"), r.PathValue("id")
	self := "/t/" + esc(t) + "/device/" + esc(id)
	switch r.PostFormValue("action") {
	case "enable", "disable":
		var d registry.Device
		if err := s.call(r, http.MethodGet, "/v1/devices/"+esc(t)+"/"+esc(id), nil, &d); err != nil {
			s.fail(w, r, err)
			return
		}
		on := r.PostFormValue("action") == "enable"
		d.Enabled = &on
		d.Status = nil // read-only
		if err := s.call(r, http.MethodPut, "/v1/devices/"+esc(t)+"/"+esc(id), d, nil); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, self, fmt.Sprintf("Device %s %sd.", id, r.PostFormValue("action")))
	case "password":
		authID := strings.TrimSpace(r.PostFormValue("authId"))
		if authID == "" {
			authID = id
		}
		if err := s.setPassword(r, t, id, authID, r.PostFormValue("password")); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, self, fmt.Sprintf("Password of auth-id %s set.", authID))
	case "delete":
		if err := s.call(r, http.MethodDelete, "/v1/devices/"+esc(t)+"/"+esc(id), nil, nil); err != nil {
			s.fail(w, r, err)
			return
		}
		s.done(w, r, "/t/"+esc(t)+"/devices", fmt.Sprintf("Device %s deleted.", id))
	default:
		s.renderError(w, r, nil, http.StatusBadRequest, "Unknown action.")
	}
}
