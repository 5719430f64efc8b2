// A real OpenID provider (the `oidc-provider` package) for Ward's openid-connect tests.
//
//   node provider.mjs --port PORT --issuer URL --keys-dir DIR --keys k1,k2 --redirect-uri URL
//                     [--post-logout-redirect-uri URL]
//
// Signing keys are RSA keys kept as JWK files in DIR, one per name, made on first use: the
// first name of --keys signs, the others are only published in the JWKS. A test rotates
// keys by starting the provider again with other names.
//
// The client `ward-gateway` (secret `ward-secret`, client_secret_basic) may use the
// authorization code flow (PKCE required), refresh tokens and client credentials. The code
// flow's access tokens are opaque and live 4 seconds, so that the gateway refreshes them;
// tokens for the resource indicators below are JWTs, and `urn:ward:short`'s live 2 seconds.
// The client `stranger` (secret `stranger-secret`) may use client credentials only.
// With --private-key-jwt-redirect-uris, the client `ward-pkjwt` signs in with its own key.
// With --tls-cert and --tls-key it serves HTTPS (the issuer is then https://...).
// Sign-in and consent are oidc-provider's development forms: any login is accepted.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    'keys-dir': { type: 'string' },
    keys: { type: 'string' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    'private-key-jwt-redirect-uris': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
for (const required of ['port', 'issuer', 'keys-dir', 'keys', 'redirect-uri']) {
  if (!args[required]) {
    console.error(`provider.mjs: --${required} is required`);
    process.exit(2);
  }
}

/** The private JWK named `name`, made and saved on first use. */
function key(name) {
  const file = join(args['keys-dir'], `${name}.json`);
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: name, alg: 'RS256', use: 'sig' };
    writeFileSync(file, JSON.stringify(jwk));
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Resource servers: audience, scopes and lifetime of their (JWT) access tokens. */
const RESOURCES = {
  'urn:ward:api': { audience: 'urn:ward:api', scope: 'read write', accessTokenTTL: 3600 },
  'urn:ward:short': { audience: 'urn:ward:api', scope: 'read write', accessTokenTTL: 2 },
  'urn:ward:other': { audience: 'urn:ward:other', scope: 'read write', accessTokenTTL: 3600 },
};

const ACCOUNTS_EMAIL_DOMAIN = 'example.test';

/** The public half of a private JWK. */
function publicJwk({ kty, n, e, kid, alg, use }) {
  return { kty, n, e, kid, alg, use };
}

/** With --private-key-jwt-redirect-uris: the client `ward-pkjwt`, which authenticates with
 * its RSA key (kept in DIR/client-ward-pkjwt.json) instead of a secret. */
const privateKeyJwtClients = args['private-key-jwt-redirect-uris'] ? [{
  client_id: 'ward-pkjwt',
  redirect_uris: args['private-key-jwt-redirect-uris'].split(','),
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'RS256',
  jwks: { keys: [publicJwk(key('client-ward-pkjwt'))] },
}] : [];

const provider = new Provider(args.issuer, {
  clients: [{
    client_id: 'ward-gateway',
    client_secret: 'ward-secret',
    redirect_uris: [args['redirect-uri']],
    post_logout_redirect_uris: args['post-logout-redirect-uri'] ? [args['post-logout-redirect-uri']] : [],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }, {
    // A second client, whose tokens name no consumer of the gateway.
    client_id: 'stranger',
    client_secret: 'stranger-secret',
    redirect_uris: [],
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }, ...privateKeyJwtClients],
  jwks: { keys: args.keys.split(',').map(key) },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, email: `${id}@${ACCOUNTS_EMAIL_DOMAIN}`, name: id }),
  }),
  claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // Every code exchange gets a refresh token, so the gateway can refresh sessions.
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    // Access tokens of the authorization code flow: short, so that a test sees a refresh.
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 4,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
    IdToken: 3600,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    AuthorizationCode: 60,
    RefreshToken: 3600,
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // The authorization code flow asks for no resource: its access token is opaque.
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => false,
      getResourceServerInfo: (ctx, resource) => {
        const info = RESOURCES[resource];
        if (!info) {
          throw new Provider.errors.InvalidTarget();
        }
        return { ...info, accessTokenFormat: 'jwt' };
      },
    },
  },
});
provider.proxy = false;

// On 127.0.0.1: plain HTTP, or HTTPS with --tls-cert and --tls-key (PEM files).
const listening = () => console.log(`oidc-provider listening on ${args.issuer}`);
if (args['tls-cert']) {
  const tls = { cert: readFileSync(args['tls-cert']), key: readFileSync(args['tls-key']) };
  createServer(tls, provider.callback()).listen(Number(args.port), '127.0.0.1', listening);
} else {
  provider.listen(Number(args.port), '127.0.0.1', listening);
}
