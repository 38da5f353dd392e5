"""Code system URIs the adapter reads and writes, with the spellings seen in the wild that mean the
same system (an OID, http instead of https)."""

from __future__ import annotations

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
HCPCS_HTTPS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT_LIKE_SYSTEMS = frozenset(
    {CPT, HCPCS, HCPCS_HTTPS, "urn:oid:2.16.840.1.113883.6.12", "urn:oid:2.16.840.1.113883.6.285"}
)
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10CM_LIKE = frozenset({ICD10CM, "urn:oid:2.16.840.1.113883.6.90"})
POS_SYSTEM = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
POS_LIKE = frozenset(
    {POS_SYSTEM, "http://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"}
)
