"""The Try-it walkthrough (issue 14 item 1): a demo third party built into the gateway.

It is a real CDS client of this very server: it reads the OAuth metadata, registers dynamically (WG1-02 §4), points
its code-flow client's redirect URI at itself (WG1-02 §5.5), pushes an authorization request with PKCE S256
(RFC 9126, RFC 7636), sends the browser to the consent pages (greenbridge's, then the custodian's), exchanges the
code, waits for the Grant to leave ``pending`` (WG1-02 §8.2) and reads the usage segments (WG3-01 §10.7), all over
HTTP against the configured issuer like any third party. Its tokens stay on the server, per browser session
(:mod:`gateway.demo.sessions`); the browser holds only a signed session id.

* :mod:`gateway.demo.client`: the CDS client (httpx2);
* :mod:`gateway.demo.sessions`: its per-browser state, encrypted on disk under ``<data_dir>/demo``;
* :mod:`gateway.demo.usage`: usage segments → daily kWh per meter → an SVG chart.
"""
