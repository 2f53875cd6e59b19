// Preload for the oidc-provider test fixture (tests/authenticate/oidc_provider/server.js):
// that server listens on port 0; with FIXED_PORT set, port 0 becomes FIXED_PORT, so the
// provider can be stopped and started again at the same issuer URL (IdP outage tests).
import http from 'node:http';

const fixed = Number(process.env.FIXED_PORT || 0);
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port === 0 && fixed ? fixed : port, ...rest);
};
