// The Function App on the Flex Consumption plan: Python 3.11, HTTP streams, identity-based storage, only the site
// properties and app settings Flex accepts.
// Authentication (DICOMWEB_AUTH_*) and CORS (DICOMWEB_CORS_ALLOWED_ORIGINS) are the app's own, set in appSettings.
param location string
param tags object
param name string
param planName string
@description('Resource ID of the app\'s identity: the DICOM data (DefaultAzureCredential picks it by AZURE_CLIENT_ID).')
param appIdentityId string
param appIdentityClientId string
@description('Resource ID of the host\'s identity: AzureWebJobsStorage, the deployment package and telemetry.')
param hostIdentityId string
param hostIdentityClientId string
@description('Blob endpoint of the host\'s own storage account (not the DICOM data account).')
param hostBlobEndpoint string
param deploymentContainer string
param applicationInsightsConnectionString string
param instanceMemoryMB int
param maximumInstanceCount int
param httpPerInstanceConcurrency int
param maxRequestBodyBytes int
@description('The app\'s own settings (DICOMWEB_*), merged with the platform ones.')
param appSettings object

// Only settings Flex Consumption accepts: none of its deprecation table (tests/infra/test_flex_consumption.py keeps
// the list). The runtime, scale and deployment live in functionAppConfig instead.
var settings = union(appSettings, {
  // The host's own storage, by the host identity: no connection string, no key. Blob only: the host keeps its keys
  // and the timer's schedule monitor in blobs; there is no queue trigger, so no queueServiceUri and no queue role.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: hostIdentityClientId
  AzureWebJobsStorage__blobServiceUri: hostBlobEndpoint
  // DefaultAzureCredential in the app picks the app identity (the DICOM data).
  AZURE_CLIENT_ID: appIdentityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${hostIdentityClientId};Authorization=AAD'
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
    userAssignedIdentities: {
      '${appIdentityId}': {}
      '${hostIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      // No ftpsState: Flex Consumption has no FTP(S) endpoint and rejects the property (ARM error 51021; the
      // deprecation table says "FTPS not supported"). checkov's CKV_AZURE_78 is skipped for it in .checkov.yaml.
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
          value: '${hostBlobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hostIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        // Python's default on Flex is 1 request per instance; main.bicep's httpPerInstanceConcurrency says why not.
        triggers: {
          http: { perInstanceConcurrency: httpPerInstanceConcurrency }
        }
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
