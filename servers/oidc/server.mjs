// oidc-provider, configured as a SMART Backend Services authorization server for the fhir_lupus tests.
//
//   node server.mjs [PORT]      PORT defaults to $OIDC_PORT, then 18090; issuer http://127.0.0.1:PORT
//
// This file only configures the library: every endpoint (token, registration, introspection, revocation,
// discovery) is oidc-provider's own code as its maker ships it. README.md says what is configured and why.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT || 18090);
const issuer = `http://127.0.0.1:${port}`;

// Loopback test values, not secrets: anyone who can reach 127.0.0.1 may register a client or introspect.
const initialAccessToken = process.env.OIDC_INITIAL_ACCESS_TOKEN || 'fhir-lupus-test-registration';
const gatewaySecret = process.env.OIDC_GATEWAY_SECRET || 'fhir-lupus-test-gateway-secret';

// SMART App Launch 2.x system scopes and their 1.0 forms (a client may send either).
const SYSTEM_SCOPES = ['system/*.rs', 'system/*.cud', 'system/*.read', 'system/*.write'];

// Client metadata (a registration extension) that shortens this client's access tokens, for expiry tests.
const TTL_PROPERTY = 'x_access_token_ttl';
const DEFAULT_TTL = 300;

// The provider's own signing key (it issues no ID tokens here; a fresh key avoids the built-in dev keys).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

const provider = new Provider(issuer, {
  clients: [
    {
      // The test gateway in front of the FHIR server: it only introspects, so no grant types.
      client_id: 'fhir-gateway',
      client_secret: gatewaySecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  clientAuthMethods: ['private_key_jwt', 'client_secret_basic'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS384', 'ES384'],
  },
  clientDefaults: {
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'private_key_jwt',
  },
  scopes: SYSTEM_SCOPES,
  extraClientMetadata: {
    properties: [TTL_PROPERTY],
    validator(ctx, key, value) {
      if (key === TTL_PROPERTY && value !== undefined && !(Number.isInteger(value) && value >= 1 && value <= 3600)) {
        throw new Error(`${TTL_PROPERTY} must be an integer number of seconds between 1 and 3600`);
      }
    },
  },
  ttl: {
    ClientCredentials(ctx, token, client) {
      return client.metadata()[TTL_PROPERTY] ?? DEFAULT_TTL;
    },
  },
  features: {
    clientCredentials: { enabled: true },
    registration: { enabled: true, initialAccessToken },
    introspection: {
      enabled: true,
      // Only the gateway (and a token's own client) may ask about a token.
      async allowedPolicy(ctx, client, token) {
        return client.clientId === 'fhir-gateway' || token.clientId === client.clientId;
      },
    },
    revocation: {
      enabled: true,
      // A client revokes only its own tokens.
      async allowedPolicy(ctx, client, token) {
        return token.clientId === client.clientId;
      },
    },
    devInteractions: { enabled: false },
  },
  jwks: { keys: [privateKey.export({ format: 'jwk' })] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
});

// The token endpoint answers every failed client authentication with the same words; say why in our log.
for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'registration_create.error']) {
  provider.on(event, (ctx, error) => {
    const detail = error.error_detail || error.cause?.message || '';
    console.log(`${event}: ${error.message} ${error.error_description || ''} ${detail}`.trim());
  });
}
provider.on('server_error', (ctx, error) => console.error('server_error', error));

const server = createServer(provider.callback());
server.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening, issuer ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
