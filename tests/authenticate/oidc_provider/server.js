// Test fixture: panva's oidc-provider (OpenID certified), configured minimally for
// gatehouse's relying-party tests. Not production configuration.
//
// Environment:
//   CLIENT_ID, CLIENT_SECRET        the static confidential client
//   REDIRECT_URIS                   space-separated redirect URIs of that client
//   POST_LOGOUT_REDIRECT_URIS       space-separated post-logout redirect URIs
//   TOKEN_AUTH_METHOD               client_secret_basic (default) or client_secret_post
//   CLIENT_AUTH_METHODS             space-separated methods the provider offers (default: both)
//   ID_TOKEN_ALG                    RS256 (default) or HS256 (signed with CLIENT_SECRET)
//   EXTRA_CLIENTS                   space-separated `id:secret` pairs: more clients like the
//                                   first (same redirect URIs), for per-route clients
//   ID_TOKEN_CLAIMS                 1: put the granted scopes' claims (email, name, groups)
//                                   in the ID token too, as Google, Entra ID, Okta and
//                                   Keycloak do (default: userinfo only, Core §5.4)
//   RESOURCE                        a resource indicator (RFC 8707), e.g. api://orders: every
//                                   access token is then a JWT for it (RFC 9068: aud is the
//                                   resource, signed with the provider's keys) carrying the
//                                   user's email and groups, as Entra ID or Keycloak issue
//                                   them; the resource's scope is `api:read`
//
// Listens on 127.0.0.1, port 0; prints "PORT <n>" on stdout once it accepts connections.
//
// Interactive login is completed without a human: the interaction route signs in the
// user named by the authorization request's `login_hint` (an account of USERS) and
// grants every scope and claim the client asked for.
import * as http from 'node:http';
import Provider from 'oidc-provider';

const USERS = {
  alice: {
    email: 'alice@example.com', email_verified: true, name: 'Alice Example',
    groups: ['admins', 'staff'],
  },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Example', groups: [] },
};

const env = (name, fallback) => process.env[name] ?? fallback;
const words = (value) => value.split(/\s+/).filter(Boolean);

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const idTokenAlg = env('ID_TOKEN_ALG', 'RS256');
  const resource = env('RESOURCE', '');

  const client = (clientId, clientSecret) => ({
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: words(env('REDIRECT_URIS', 'http://127.0.0.1/oauth2/callback')),
      post_logout_redirect_uris: words(env('POST_LOGOUT_REDIRECT_URIS', 'http://127.0.0.1/.pomerium/signed_out')),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: env('TOKEN_AUTH_METHOD', 'client_secret_basic'),
      id_token_signed_response_alg: idTokenAlg,
  });
  const extra = words(env('EXTRA_CLIENTS', '')).map((pair) => {
    const [id, ...rest] = pair.split(':');
    return client(id, rest.join(':'));
  });

  const provider = new Provider(issuer, {
    clients: [
      client(env('CLIENT_ID', 'gatehouse'), env('CLIENT_SECRET', 'gatehouse-test-secret-0123456789abcdef')),
      ...extra,
    ],
    clientAuthMethods: words(env('CLIENT_AUTH_METHODS', 'client_secret_basic client_secret_post')),
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'HS256'] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    async findAccount(_ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...user }; } };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      userinfo: { enabled: true },
      resourceIndicators: resource ? {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api:read',
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      } : { enabled: false },
    },
    async extraTokenClaims(_ctx, token) {
      const user = USERS[token.accountId];
      return resource && user ? { email: user.email, groups: user.groups } : undefined;
    },
    conformIdTokenClaims: env('ID_TOKEN_CLAIMS', '') !== '1',
    pkce: { required: () => true },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { IdToken: 300, AccessToken: 300, AuthorizationCode: 60, RefreshToken: 3600 },
  });
  provider.proxy = false;

  async function interaction(req, res) {
    try {
      const details = await provider.interactionDetails(req, res);
      const { prompt, params, session, grantId } = details;
      let result;
      if (prompt.name === 'login') {
        const account = params.login_hint;
        if (!USERS[account]) {
          res.writeHead(400, { 'content-type': 'text/plain' });
          res.end('unknown login_hint');
          return;
        }
        result = { login: { accountId: account } };
      } else {
        const grant = grantId
          ? await provider.Grant.find(grantId)
          : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
        const missing = prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
        result = { consent: { grantId: await grant.save() } };
      }
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
  }

  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res);
    } else {
      callback(req, res);
    }
  });
  process.stdout.write(`PORT ${port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
