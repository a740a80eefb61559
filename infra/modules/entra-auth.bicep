// Optional Entra ID authentication (App Service "Easy Auth"): with a client ID, every request except the health
// check and the OpenAPI document needs a bearer token for that app registration; without one, nothing is deployed.
// checkov skips this file (infra/.checkov.yaml): its Web App checks read a sites/config resource as a whole site.
param siteName string
param clientId string
param tenantId string
param allowedAudiences array

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(clientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // Probes and API discovery stay open; everything else needs a token.
      excludedPaths: ['/health/check', '/v1/api.yaml', '/v2/api.yaml']
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: { allowedAudiences: allowedAudiences }
      }
    }
    login: { tokenStore: { enabled: false } }
  }
}
