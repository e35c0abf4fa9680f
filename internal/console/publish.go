package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Producers resolves an address for publishing (*router.Router).
type Producers interface {
	Producer(ctx context.Context, tenantName, name string) (*router.Producer, error)
}

// maxTestBody bounds a test message typed into the console.
const maxTestBody = 64 << 10

// publishTest publishes the test message of the address page's form.
// The admin API has no publish: the rule is the admin API's for changes
// to the tenant (its administrators and the platform administrator; an
// operator is read-only), and no one publishes to a reserved name (as on
// every protocol). The message is counted and rate limited like any
// client's.
func (s *Server) publishTest(r *http.Request, tenantName, name string) (string, error) {
	p := sessionOf(r).p
	if s.cfg.Producers == nil {
		return "", errors.New("publishing from the console is not available on this node")
	}
	if !p.MayAdminister(tenantName, auth.ScopeTenantWrite) {
		return "", &apiError{Status: http.StatusForbidden, Message: refusalText(p, tenantName)}
	}
	if err := auth.Reserved(name, tenant.ActionSend); err != nil {
		return "", &apiError{Status: http.StatusForbidden, Message: err.Error()}
	}
	body := r.PostFormValue("body")
	if len(body) > maxTestBody {
		return "", &apiError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("a test message is at most %d bytes", maxTestBody)}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	prod, err := s.cfg.Producers.Producer(ctx, tenantName, name)
	if err != nil {
		return "", &apiError{Status: http.StatusBadRequest, Message: err.Error()}
	}
	m := &message.Message{
		Body:         []byte(body),
		ContentType:  strings.TrimSpace(r.PostFormValue("contentType")),
		CreationTime: time.Now(),
		Durable:      true,
		Subject:      strings.TrimSpace(r.PostFormValue("subject")),
	}
	o, err := prod.PublishSync(ctx, m)
	if err != nil {
		return "", &apiError{Status: http.StatusServiceUnavailable, Message: err.Error()}
	}
	if o.Kind != router.Accepted {
		msg := o.Kind.String()
		if o.Description != "" {
			msg += ": " + o.Description
		} else if o.Condition != "" {
			msg += ": " + o.Condition
		}
		return "", &apiError{Status: http.StatusConflict, Message: "the address did not take the message (" + msg + ")"}
	}
	switch {
	case prod.TopicSpace():
		return "sent to the topic space (no address of that name)", nil
	case prod.Type() == "multicast":
		return "sent to the current consumers (multicast)", nil
	case prod.Type() == "anycast":
		return "accepted by a consumer (anycast)", nil
	}
	return "stored", nil
}

// refusalText says why p may not change tenantName (the API's words).
func refusalText(p *auth.Principal, tenantName string) string {
	if p.Tenant != tenantName && !p.IsAdmin() {
		return fmt.Sprintf("user %s@%s may only administer tenant %q", p.User, p.Tenant, p.Tenant)
	}
	return "the operator role is read-only"
}
