"""Hand-kept facts for ``generate_catalog.py``: what the reference data does not say (or says in prose).

Each table names its source. The generator checks every entry against the reference data and fails
(:class:`CatalogBuildError`) when an entry matches nothing, so stale rules cannot linger.
"""

from __future__ import annotations

# -- linking bulk/sync variants to their standard endpoint ------------------------------------------------

# bulk/sync variants whose (service, name) does not match a standard endpoint path.
# Key: variant path (case-insensitive); value: standard path it belongs to.
LINK_OVERRIDES: dict[str, str] = {
    # Exact files transaction lines under "financialtransaction" for the standard endpoint but under
    # "Financial" for bulk and sync.
    "bulk/financial/transactionlines": "financialtransaction/TransactionLines",
    "sync/financial/transactionlines": "financialtransaction/TransactionLines",
}

# Variants that have no standard endpoint in the reference data: each becomes its own entity with
# ``path = None``. Listed explicitly so a new unmatched variant makes the generator fail.
VARIANT_ONLY: frozenset[str] = frozenset(
    {
        "sync/deleted",  # the deletion log itself
        "sync/cashflow/paymentterms",  # no standard cashflow/PaymentTerms in the reference
        "sync/crm/quotationheaders",  # header-only rows; sync/CRM/Quotations is one row per line
        "sync/salesorder/salesorderheaders",  # header-only rows; sync/SalesOrder/SalesOrders is per line
        "sync/inventory/serialbatchnumbers",  # standard has SerialNumbers / BatchNumbers separately
        "sync/inventory/stockserialbatchnumbers",  # standard has StockSerialNumbers / StockBatchNumbers
        "sync/inventory/stockpositions",  # standard read/logistics/StockPosition is a function
        "sync/inventory/storagelocationstockpositions",
        "sync/inventory/itemstoragelocations",  # standard has only inventory/StorageLocations
        "sync/logistics/purchaseitemprices",
        "sync/project/timecosttransactions",  # standard has TimeTransactions / CostTransactions apart
        "bulk/project/projectwbs",  # standard has only read/project/ProjectWBSByProject functions
        "sync/project/projectwbs",
        "sync/hrm/scheduleentries",  # standard hrm/Schedules only
        "sync/manufacturing/shoporderpurchaseplanning",
        "sync/manufacturing/shopordersuborders",
        "sync/payroll/bankaccounts",  # payroll bank accounts; crm/BankAccounts is another entity
        "sync/payroll/employmentclas",
    }
)

# Bare names that occur in several services: which one a bare name means. Names not listed here
# and not settled by the rule in the package (the one candidate with bulk/sync, else the one that
# is not a ``read/`` function or beta endpoint) are ambiguous and must be qualified.
CANONICAL_BARE_NAMES: dict[str, str] = {
    # "Use system/Divisions, not hrm/Divisions" (picqer issue 229).
    "divisions": "system/Divisions",
}

# Other names for an endpoint: lower-case alias -> standard path. Exact's documentation page for
# current/Me is "SystemSystemMe", so users write System/Me.
ALIASES: dict[str, str] = {
    "system/me": "current/Me",
}

# Endpoints called without a division in the path (research exact-online-api.md section 3, from the
# picqer and .NET clients' Connection classes).
NO_DIVISION: frozenset[str] = frozenset({"current/me", "system/users"})

# Standard endpoints that answer 400 "Please add a $select or a $top=1 statement" without $select
# (picqer README / issue 315, ruby client issue 22). bulk/ and sync/ always need $select.
SELECT_REQUIRED: frozenset[str] = frozenset({"generaljournalentry/generaljournalentries", "salesorder/goodsdeliveries"})

# -- deprecations -------------------------------------------------------------------------------------------

# Deprecated endpoints (flagged in the reference data) whose successor Exact names: lower-case path ->
# (replacement path, note). Sources: the sync/Deleted EntityType 12 description ("Please refer to the new
# entity SalesOrderHeaders, SalesOrderLines") and picqer's SyncQuotation/SyncSalesOrder docblocks
# (research peer-integrations-2026-12.md section 4.3). Deprecated endpoints not listed here have no
# named replacement.
REPLACEMENTS: dict[str, tuple[str, str]] = {
    "sync/salesorder/salesorders": (
        "sync/SalesOrder/SalesOrderHeaders",
        "headers in sync/SalesOrder/SalesOrderHeaders, lines in sync/SalesOrder/SalesOrderLines",
    ),
    "sync/crm/quotations": (
        "sync/CRM/QuotationHeaders",
        "headers in sync/CRM/QuotationHeaders, lines in sync/CRM/QuotationLines",
    ),
}

# -- sync/Deleted EntityType codes ------------------------------------------------------------------------

# Codes and Exact's names are read from the EntityType description of sync/Deleted (1-55, no 11/52);
# this table says which catalog entities a code covers. Codes 56-59 are not in that description:
# paddynatte lists 59 = AbsenceRegistrations, so 56-59 are probably the new HRM entities
# (research exact-online-api.md section 4, peer-integrations-2026-12.md section 4.3; unverified).
# code -> (Exact's name, catalog entity paths). An empty tuple: known code, no entity linked.
DELETED_ENTITY_TYPES: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("TransactionLines", ("financialtransaction/TransactionLines",)),
    2: ("Accounts", ("crm/Accounts",)),
    3: ("Addresses", ("crm/Addresses",)),
    4: ("Attachments", ("documents/DocumentAttachments",)),
    5: ("Contacts", ("crm/Contacts",)),
    6: ("Documents", ("documents/Documents",)),
    7: ("GLAccounts", ("financial/GLAccounts",)),
    8: ("ItemPrices", ("logistics/SalesItemPrices", "logistics/PurchaseItemPrices")),
    9: ("Items", ("logistics/Items",)),
    10: ("PaymentTerms", ("cashflow/PaymentTerms",)),
    12: ("SalesOrders", ("salesorder/SalesOrders",)),
    13: ("SalesInvoices", ("salesinvoice/SalesInvoices",)),
    14: ("TimeCostTransactions", ("project/TimeCostTransactions",)),
    15: ("StockPositions", ("inventory/StockPositions",)),
    16: ("GoodsDeliveries", ("salesorder/GoodsDeliveries",)),
    17: ("GoodsDeliveryLines", ("salesorder/GoodsDeliveryLines",)),
    18: ("GLClassifications", ("financial/GLClassifications",)),
    19: ("ItemWarehouses", ("inventory/ItemWarehouses",)),
    20: ("StorageLocationStockPositions", ("inventory/StorageLocationStockPositions",)),
    21: ("Projects", ("project/Projects",)),
    22: ("PurchaseOrders", ("purchaseorder/PurchaseOrders",)),
    23: ("Subscriptions", ("subscription/Subscriptions",)),
    24: ("SubscriptionLines", ("subscription/SubscriptionLines",)),
    25: ("ProjectWBS", ("project/ProjectWBS",)),
    26: ("ProjectPlanning", ("project/ProjectPlanning",)),
    27: ("LeaveAbsenceHoursByDay", ("hrm/LeaveAbsenceHoursByDay",)),
    28: ("SerialBatchNumbers", ("inventory/SerialBatchNumbers",)),
    29: ("StockSerialBatchNumbers", ("inventory/StockSerialBatchNumbers",)),
    30: ("ItemAccounts", ()),
    31: ("DiscountTables", ()),
    32: ("SalesOrderHeaders", ("salesorder/SalesOrderHeaders",)),
    33: ("SalesOrderLines", ("salesorder/SalesOrderLines",)),
    34: ("QuotationHeaders", ("crm/QuotationHeaders",)),
    35: ("QuotationLines", ("crm/QuotationLines",)),
    36: ("ShopOrders", ("manufacturing/ShopOrders",)),
    37: ("ShopOrderMaterialPlans", ("manufacturing/ShopOrderMaterialPlans",)),
    38: ("ShopOrderRoutingStepPlans", ("manufacturing/ShopOrderRoutingStepPlans",)),
    39: ("Schedules", ("hrm/Schedules",)),
    40: ("ScheduleEntries", ("hrm/ScheduleEntries",)),
    41: ("ItemStorageLocations", ("inventory/ItemStorageLocations",)),
    42: ("Employees", ("payroll/Employees",)),
    43: ("Employments", ("payroll/Employments",)),
    44: ("EmploymentContracts", ("payroll/EmploymentContracts",)),
    45: ("EmploymentOrganizations", ("payroll/EmploymentOrganizations",)),
    46: ("EmploymentCLAs", ("payroll/EmploymentCLAs",)),
    47: ("EmploymentSalaries", ("payroll/EmploymentSalaries",)),
    48: ("BankAccounts", ("payroll/BankAccounts",)),
    49: ("EmploymentTaxAuthoritiesGeneral", ("payroll/EmploymentTaxAuthoritiesGeneral",)),
    50: ("ShopOrderPurchasePlanning", ("manufacturing/ShopOrderPurchasePlanning",)),
    51: ("ShopOrderSubOrders", ("manufacturing/ShopOrderSubOrders",)),
    53: ("RequirementIssues", ()),
    54: ("BillOfMaterialMaterials", ("manufacturing/BillOfMaterialMaterials",)),
    55: ("BillOfMaterialVersions", ("manufacturing/BillOfMaterialVersions",)),
    56: ("LeaveRegistrations", ("hrm/LeaveRegistrations",)),
    57: ("LeaveBuildUpRegistrations", ("hrm/LeaveBuildUpRegistrations",)),
    58: ("AbsenceRegistrationTransactions", ("hrm/AbsenceRegistrationTransactions",)),
    59: ("AbsenceRegistrations", ("hrm/AbsenceRegistrations",)),
}

# Codes the sync/Deleted description does not list (see above).
UNVERIFIED_DELETED_CODES: frozenset[int] = frozenset({56, 57, 58, 59})

# Shown beside the codes in docs/endpoints.md.
DELETED_NOTES: dict[int, str] = {
    8: "inferred from Exact's name; not confirmed which price endpoints it covers",
    12: "Exact: being replaced by 32 and 33",
    48: "inferred: sync/Payroll/BankAccounts",
    56: "not in Exact's list; inferred from paddynatte (59 = AbsenceRegistrations)",
    57: "not in Exact's list; inferred",
    58: "not in Exact's list; inferred",
    59: "not in Exact's list; paddynatte",
}

# -- mandatory filtering ----------------------------------------------------------------------------------

# Exact refuses a collection GET on the standard or bulk endpoint of an entity with a sync twin unless
# $filter references one of a listed set of fields (release note 2107, widened 2022). The lists are
# known only where someone quoted Exact's 400: picqer/exact-php-client issue 591 (2022-10-31).
# standard path (lower) -> (fields as quoted, complete?). An incomplete quote (cut off in our source)
# also accepts every field of the endpoint that sorts after the last quoted one (case-insensitive), since
# Exact lists them alphabetically: better one possible 400 than refusing a filter Exact accepts.
# Entities with a sync twin not listed here get an empty list: "some $filter is required".
MANDATORY_FILTER_FIELDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "crm/accounts": (
        (
            "Accountant", "AccountManager", "AddressLine1", "AddressLine2", "AddressLine3", "Blocked", "BRIN",
            "BSN", "ChamberOfCommerce", "City", "Classification1", "Classification2", "Classification3",
            "Classification4", "Classification5", "Classification6", "Classification7", "Classification8",
            "Classification", "Code", "CodeAtSupplier", "Country", "Created", "Email", "EndDate", "Fax", "ID",
            "InvoiceAccount", "IsAccountant", "IsReseller", "IsSales", "IsSupplier", "MainContact", "Modified",
            "Name", "Parent", "Phone", "Postcode", "PriceList", "Reseller", "RSIN", "SearchCode", "StartDate",
            "Status", "Type", "VATNumber",
        ),
        True,
    ),
    "logistics/items": (
        (
            "Barcode", "Class_01", "Class_02", "Class_03", "Class_04", "Class_05", "Class_06", "Class_07",
            "Class_08", "Class_09", "Class_10", "Code", "CostPriceNew", "Created", "Description", "EndDate",
            "ExtraDescription", "FreeBoolField_01", "FreeBoolField_02", "FreeBoolField_03", "FreeBoolField_04",
            "FreeBoolField_05",
        ),
        False,
    ),
}  # fmt: skip
