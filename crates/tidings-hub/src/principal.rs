//! Who is making a request.

/// The caller of a hub operation, as the HTTP layer authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin key, or a loopback caller of a server without one.
    Admin,
    /// An application, by API key or request signature.
    Application(String),
    /// The hub itself (dead-letter notices).
    System,
}

impl Principal {
    /// Whether this principal may act as `application`.
    pub fn may_act_as(&self, application: &str) -> bool {
        match self {
            Self::Admin | Self::System => true,
            Self::Application(name) => name == application,
        }
    }

    /// Whether this is the admin.
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin | Self::System)
    }

    /// How events record their publisher.
    pub fn label(&self) -> String {
        match self {
            Self::Admin => "admin-key".to_owned(),
            Self::Application(name) => format!("service:{name}"),
            Self::System => "system".to_owned(),
        }
    }
}
