// The Function App on the Flex Consumption plan: Python 3.11, HTTP streams, identity-based storage.
// Authentication (DICOMWEB_AUTH_*) and CORS (DICOMWEB_CORS_ALLOWED_ORIGINS) are the app's own, set in appSettings.
param location string
param tags object
param name string
param planName string
param identityId string
param identityClientId string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainer string
param applicationInsightsConnectionString string
param instanceMemoryMB int
param maximumInstanceCount int
param maxRequestBodyBytes int
@description('FUNCTIONS_WORKER_PROCESS_COUNT (1-10); 0 leaves it out, as Flex Consumption wants (it lists the setting as not valid).')
@minValue(0)
@maxValue(10)
param workerProcessCount int
@description('The app\'s own settings (DICOMWEB_*), merged with the platform ones.')
param appSettings object

// Several Python worker processes per instance where the plan runs them; the app is correct across processes
// and instances either way (Table ETags and transactions), the count only sets how much CPU one instance uses.
var workerSettings = workerProcessCount > 0 ? { FUNCTIONS_WORKER_PROCESS_COUNT: string(workerProcessCount) } : {}

var settings = union(appSettings, workerSettings, {
  // The host's own storage, by identity: no connection string, no key.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  // DefaultAzureCredential in the app picks this user-assigned identity.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // HTTP streams (FastAPI Request/Response) need the worker to index functions at start-up.
  PYTHON_ENABLE_INIT_INDEXING: '1'
  FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: string(maxRequestBodyBytes)
})

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Empty on purpose: the app answers CORS itself (DICOMWEB_CORS_ALLOWED_ORIGINS); a platform list would
      // answer preflights before the app and its headers would fight the app's.
      cors: {
        allowedOrigins: []
        supportCredentials: false
      }
      appSettings: [for setting in items(settings): { name: setting.key, value: setting.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
