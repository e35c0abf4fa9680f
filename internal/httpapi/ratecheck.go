package httpapi

// rateChecker is optionally implemented by Router (*router.Router): a
// publish is refused over the tenant's message rate before its body is
// read (429 with Retry-After, as the router's own refusal), so that a
// tenant over its rate cannot make the node read large bodies only to
// drop them.
type rateChecker interface {
	CheckRate(tenantName string) error
}

// checkRate is nil unless the tenant's message rate has no token now.
func (s *Server) checkRate(tenantName string) error {
	if rc, ok := s.cfg.Router.(rateChecker); ok {
		return rc.CheckRate(tenantName)
	}
	return nil
}
