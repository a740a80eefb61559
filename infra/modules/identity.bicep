// The two user-assigned managed identities and their role assignments, each scoped to one resource:
//   app  (DefaultAzureCredential in the app): Blob and Table Data Contributor on the DICOM data account only;
//   host (the Functions host: AzureWebJobsStorage, the deployment package, telemetry): Blob Data Owner on the
//        host account only, and Monitoring Metrics Publisher on Application Insights.
// Neither identity has any role on the other's account, so the data identity cannot rewrite the deployed package or
// the host keys, and the host's Owner role reaches no DICOM data. Both identities are assigned to the one site, so
// code running in it can still ask for either identity's token (a site cannot hide one from its own code); what the
// split buys is that no single identity holds both, and that each role is visible as what it is for.
// Queue roles are not granted: the app has HTTP and timer triggers only, and the timer's schedule monitor uses blobs.
param location string
param tags object
param appIdentityName string
param hostIdentityName string
param dataAccountName string
param hostAccountName string
param applicationInsightsName string
@description('Object ID of a user or group to grant the data roles too (debugging with your own Entra ID sign-in); empty: none.')
param deployerPrincipalId string = ''
@description('Kind of deployerPrincipalId: User, Group or ServicePrincipal.')
@allowed(['User', 'Group', 'ServicePrincipal'])
param deployerPrincipalType string = 'User'

// Built-in role definition IDs (the same in every tenant).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// The host's AzureWebJobsStorage (host keys, timer leases) and the Flex deployment container, as Microsoft documents.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Telemetry to Application Insights with Entra ID authentication.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var dataRoles = [storageBlobDataContributor, storageTableDataContributor]

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appIdentityName
  location: location
  tags: tags
}

resource hostIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: hostIdentityName
  location: location
  tags: tags
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appDataRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in dataRoles: {
  name: guid(dataAccount.id, appIdentity.id, role)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource hostStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, hostIdentity.id, storageBlobDataOwner)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: hostIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostTelemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, hostIdentity.id, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: hostIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Off unless a principal is given (main.bicep passes one only when grantDeployerDataAccess is true).
resource deployerDataRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in (empty(deployerPrincipalId) ? [] : dataRoles): {
  name: guid(dataAccount.id, deployerPrincipalId, role)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}]

output appId string = appIdentity.id
output appClientId string = appIdentity.properties.clientId
output hostId string = hostIdentity.id
output hostClientId string = hostIdentity.properties.clientId
