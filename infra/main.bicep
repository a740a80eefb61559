// DICOMweb on Azure Functions: everything one deployment needs, in one resource group, with no storage keys.
//   azd up                                      (azure.yaml at the repository root), or
//   az deployment group create -g RG -f infra/main.bicep -p environmentName=NAME   (main.parameters.json is azd's)
// then publish the code (`func azure functionapp publish <functionAppName>`); see infra/README.md.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(40)
@description('Name of the environment (azd): part of every resource name, and their azd-env-name tag.')
param environmentName string

@description('Region of every resource; the Flex Consumption plan must be offered there.')
param location string = resourceGroup().location

@description('Browser origins allowed to call the API (CORS; DICOMWEB_CORS_ALLOWED_ORIGINS), e.g. your OHIF viewer, or [\'*\']. Empty: none. The app answers CORS itself; the platform CORS stays empty.')
param corsAllowedOrigins array = []

@description('Client ID of an Entra ID app registration whose bearer tokens the app accepts (authMode entra), on every route except /health/check, the OpenAPI document and CORS preflights.')
param entraClientId string = ''

@description('Tenant of the Entra ID app registration (default: the deployment\'s tenant).')
param entraTenantId string = tenant().tenantId

@description('Token audiences accepted with Entra ID (default: api://<entraClientId> and the client ID itself).')
param entraAllowedAudiences array = []

@description('Who may call the API (DICOMWEB_AUTH_MODE): entra = bearer tokens of entraClientId\'s app registration with the reader/writer app roles, checked by the app (recommended); function = a Functions key on every call; none = open to anyone. Default: entra with entraClientId, else function.')
@allowed(['none', 'function', 'entra'])
param authMode string = empty(entraClientId) ? 'function' : 'entra'

@description('App role (in the token\'s roles claim) that may read: GET (DICOMWEB_AUTH_READER_ROLE).')
param readerRole string = 'DicomWeb.Reader'

@description('App role that may write: POST, PUT, DELETE (DICOMWEB_AUTH_WRITER_ROLE). It does not include reading.')
param writerRole string = 'DicomWeb.Writer'

@description('Public base URL of the service (DICOMWEB_PUBLIC_BASE_URL): the root of the RetrieveURLs the app answers with. Empty (the default): the app\'s default host name, https://<app>.azurewebsites.net; set it for a custom domain, a proxy in front (API Management, Front Door) or a sovereign cloud. With it set the app ignores X-Forwarded-* headers.')
param publicBaseUrl string = ''

@description('Largest DICOM instance (multipart part) the app accepts; larger parts get 413 (DICOMWEB_MAX_PART_BYTES). 1 GiB: an HTTP request on Azure Functions must be answered within 230 s, and 1 GiB in 230 s needs the client to send at 4.7 MB/s (37 Mbit/s) or more.')
param maxPartBytes int = 1073741824

@description('Largest request body the app accepts, 413 above (DICOMWEB_MAX_REQUEST_BYTES); the Functions host\'s own limit (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT) is set 1 MiB above it, so that the app, not the host, refuses. Same 230 s reasoning as maxPartBytes.')
param maxRequestBodyBytes int = 1073741824

@description('Flex Consumption: memory of each instance, in MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Flex Consumption: HTTP requests one instance serves at once (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency). Python\'s default on Flex is 1, which would give every STOW/WADO stream a whole instance and cap the service at maximumInstanceCount requests. The handlers are async and I/O-bound (they wait on Blob and Table Storage), so one event loop serves many at once; the bench saturates one event loop (one core) at about 16 requests in flight, and more would only queue inside the instance instead of scaling out. Default: 16 per core, i.e. instanceMemoryMB / 128 (512 MB: 4, 2048 MB: 16, 4096 MB: 32, Microsoft\'s defaults for other languages).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = instanceMemoryMB / 128

@description('Replication of the storage account that holds the DICOM files and the index.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGRS', 'Standard_RAGZRS'])
param storageSku string = 'Standard_GRS'

@description('Days that deleted or overwritten blobs (and deleted containers) can be restored.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 7

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('NCRONTAB schedule of the operations timer (DICOMWEB_OPERATIONS_SCHEDULE), which resumes long-running operations (reindex, tag deletion) a run left; the request that creates one starts it at once. Every 5 minutes by default, with the maintenance timer: a shorter one wakes an idle Flex Consumption app that often.')
param operationsSchedule string = '0 */5 * * * *'

@description('Prefix of the Table names (DICOMWEB_TABLE_PREFIX): letters and digits.')
param tablePrefix string = 'dicomweb'

@description('Object ID of the deploying user (azd fills it from AZURE_PRINCIPAL_ID). Used only with grantDeployerDataAccess.')
param principalId string = ''

@description('Kind of principalId: User (azd up by a person), ServicePrincipal (a pipeline) or Group.')
@allowed(['User', 'Group', 'ServicePrincipal'])
param principalType string = 'User'

@description('Grant principalId Storage Blob and Table Data Contributor on the DICOM data account, to read and debug the data with your own sign-in. Off by default: nobody but the app needs data access.')
param grantDeployerDataAccess bool = false

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-dicomweb-${resourceToken}'
// The site's own defaultHostName cannot be read inside its own definition (a cycle), so the default is built from the
// name: the host name ARM gives a site unless autoGeneratedDomainNameLabelScope asks for a unique one (not set here).
var publicBase = empty(publicBaseUrl) ? 'https://${functionAppName}.azurewebsites.net' : publicBaseUrl
var blobContainer = 'dicomweb'
var metadataContainer = 'dicomweb-metadata'
// Where Flex Consumption keeps the deployed package.
var deploymentContainer = 'app-package-${take(resourceToken, 20)}'
// The Functions host's 1 MiB above the app's request limit, so that the app answers 413 itself.
var hostBodyLimitBytes = maxRequestBodyBytes + 1048576
// The table the app uses today and the two planned ones (docs/storage.md); the app creates any that is missing.
var entraAudiences = !empty(entraAllowedAudiences) ? entraAllowedAudiences : (empty(entraClientId) ? [] : ['api://${entraClientId}', entraClientId])
var tableNames = ['${tablePrefix}Studies', '${tablePrefix}Index', '${tablePrefix}Changes']

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: 'log-dicomweb-${resourceToken}'
    applicationInsightsName: 'appi-dicomweb-${resourceToken}'
    retentionInDays: logRetentionDays
  }
}

// The DICOM data: files, metadata, index tables. Only the app identity has a role on it.
module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    name: 'stdicom${take(resourceToken, 17)}'
    sku: storageSku
    containerNames: [blobContainer, metadataContainer]
    tableNames: tableNames
    softDeleteDays: blobSoftDeleteDays
  }
}

// The Functions host's own account: the deployment package, host keys, timer leases. Only the host identity has a
// role on it. Locally redundant: everything in it is rebuilt by a deployment.
module hostStorage 'modules/storage.bicep' = {
  name: 'host-storage'
  params: {
    location: location
    tags: tags
    name: 'sthost${take(resourceToken, 18)}'
    sku: 'Standard_LRS'
    containerNames: [deploymentContainer]
    softDeleteDays: blobSoftDeleteDays
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    location: location
    tags: tags
    appIdentityName: 'id-dicomweb-${resourceToken}'
    hostIdentityName: 'id-dicomweb-host-${resourceToken}'
    dataAccountName: storage.outputs.name
    hostAccountName: hostStorage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    deployerPrincipalId: grantDeployerDataAccess ? principalId : ''
    deployerPrincipalType: principalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: union(tags, { 'azd-service-name': 'api' })
    name: functionAppName
    planName: 'plan-dicomweb-${resourceToken}'
    appIdentityId: identity.outputs.appId
    appIdentityClientId: identity.outputs.appClientId
    hostIdentityId: identity.outputs.hostId
    hostIdentityClientId: identity.outputs.hostClientId
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    deploymentContainer: deploymentContainer
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    maxRequestBodyBytes: hostBodyLimitBytes
    appSettings: {
      DICOMWEB_BLOB_ACCOUNT_URL: storage.outputs.blobEndpoint
      DICOMWEB_TABLE_ACCOUNT_URL: storage.outputs.tableEndpoint
      DICOMWEB_BLOB_CONTAINER: blobContainer
      DICOMWEB_METADATA_CONTAINER: metadataContainer
      DICOMWEB_TABLE_PREFIX: tablePrefix
      DICOMWEB_PUBLIC_BASE_URL: publicBase
      DICOMWEB_MAX_PART_BYTES: string(maxPartBytes)
      DICOMWEB_MAX_REQUEST_BYTES: string(maxRequestBodyBytes)
      DICOMWEB_CORS_ALLOWED_ORIGINS: join(corsAllowedOrigins, ',')
      DICOMWEB_AUTH_MODE: authMode
      DICOMWEB_AUTH_TENANT_ID: entraTenantId
      DICOMWEB_AUTH_AUDIENCE: join(entraAudiences, ',')
      DICOMWEB_AUTH_READER_ROLE: readerRole
      DICOMWEB_AUTH_WRITER_ROLE: writerRole
      DICOMWEB_OPERATIONS_SCHEDULE: operationsSchedule
    }
  }
  // The host starts with identity-based storage: its roles must exist before it does.
  dependsOn: [identity]
}

@description('The DIMSE gateway image (dimse_gateway/Dockerfile, pushed to a registry); empty: no gateway is deployed. See docs/dimse.md.')
param dimseGatewayImage string = ''

module dimseGateway 'modules/dimse-gateway.bicep' = if (!empty(dimseGatewayImage)) {
  name: 'dimse-gateway'
  params: {
    location: location
    tags: tags
    name: 'ca-dimse-${take(resourceToken, 20)}'
    environmentName: 'cae-dicomweb-${resourceToken}'
    image: dimseGatewayImage
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    blobContainer: blobContainer
    metadataContainer: metadataContainer
    tablePrefix: tablePrefix
  }
}

@description('Base URL of the service: the API is at {SERVICE_URL}/v2 (and /v1).')
output SERVICE_URL string = functionApp.outputs.url
@description('The DICOMweb root to give clients (dicomweb --url, OHIF, dicomweb-client).')
output DICOMWEB_URL string = '${functionApp.outputs.url}/v2'
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_HOST_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
