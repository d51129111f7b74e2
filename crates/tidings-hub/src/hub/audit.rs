//! Writing and reading the audit log (`hub.audit`, keyed by time-ordered
//! ids, so a time window is a key range).

use tidings_core::RecordScan;

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::{event_id, row_key_at};
use crate::model::audit::{AuditEntry, AuditRecord, AuditView};
use crate::principal::Principal;
use crate::tables::page;

/// `GET /v1/audit`'s filters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// From this time (ms), inclusive.
    pub from: Option<u64>,
    /// Up to this time (ms), exclusive.
    pub to: Option<u64>,
    /// Actions starting with this (`application.`, `delivery.replay`).
    pub action: Option<String>,
    /// Entries of this application.
    pub application: Option<String>,
}

impl Hub {
    /// Appends an entry to the audit log.
    pub async fn record_audit(&self, record: AuditRecord) -> HubResult<()> {
        let at = self.now_ms();
        let entry = AuditEntry {
            id: event_id(self.inner.rows.next(at)),
            at,
            record,
        };
        self.write_record(&self.inner.tables.audit, &entry.id.clone(), &entry)
            .await
    }

    /// The audit log, newest first (the admin only).
    pub async fn audit(
        &self,
        who: &Principal,
        filter: &AuditFilter,
        page_of: Page,
    ) -> HubResult<Vec<AuditView>> {
        if !who.is_admin() {
            return Err(HubError::Forbidden(
                "Only a superadmin can read the audit log".to_owned(),
            ));
        }
        let mut range = RecordScan::all().reverse();
        if let Some(from) = filter.from {
            range = range.from(row_key_at(from));
        }
        if let Some(to) = filter.to {
            range = range.to(row_key_at(to));
        }
        let (entries, _) = page(
            &**self.broker(),
            &self.inner.tables.audit,
            range,
            |e: &AuditEntry| {
                filter
                    .action
                    .as_deref()
                    .is_none_or(|a| e.record.action.starts_with(a))
                    && filter
                        .application
                        .as_deref()
                        .is_none_or(|a| e.record.application.as_deref() == Some(a))
            },
            page_of.skip(),
            page_of.size,
            false,
        )
        .await?;
        Ok(entries.iter().map(AuditEntry::view).collect())
    }
}
