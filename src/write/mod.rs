//! The write path: PATCH, PUT and DELETE, as a sequence of phases over one [`Walk`]:
//!
//! intent → queue → (current → preconditions → apply → write → settle)*
//!
//! - **intent**: what the client asked, parsed before any lock (428, 415, 405, 400, 413);
//! - **queue**: the resource's write queue gives this write its turn, or carries the
//!   PATCH in another's write ([`crate::resource::queue`]);
//! - **current**: the current representation, from the cache as the route's freshness
//!   allows, from the upstream after a conflict or while the resource is uncertain;
//! - **preconditions**: RFC 9110 §13.2.2, against it (412 with the current body);
//! - **apply**: the patch (on the current body indexed for it, else parsed: [`Document::index`]),
//!   then the waiting PATCHes this write may carry;
//! - **write**: sent upstream as a future no cancellation stops ([`land`]);
//! - **settle**: the answer, or once more from **current** after a refused combined
//!   write or an upstream 412 when the client stated no precondition (another writer
//!   bypassed patchgate: up to `conflict_retries`).
//!
//! Each phase returns the value the next needs, or a [`Next`] saying what happens
//! instead. Invariant: the cache holds only what the upstream confirmed.

// Phases return `Result<_, Next>`; see `Next` for why it is not boxed.
#![allow(clippy::result_large_err)]

mod http_write;
mod intent;
mod land;
mod respond;
mod stale;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, request};

use crate::body::Body;
use crate::cache::{Entry, Key};
use crate::layer::{Ctx, Exchange};
use crate::metrics::Event;
use crate::patch::{Document, Patch, PatchError};
use crate::precondition::{Conditions, Current, Outcome, evaluate};
use crate::problem::Error;
use crate::read::{Lookup, Target};
use crate::resource::{Claimed, Handle, Turn, Verdict, WriteGuard, WriteSignature};
use crate::route::CompiledRoute;

use land::Attempt;
use respond::{clone_parts, patched};

/// One write request as it walks through the phases.
struct Walk<'r> {
    route: &'r CompiledRoute,
    parts: request::Parts,
    key: Key,
    conditions: Conditions,
    intent: Intent,
    /// For a PATCH that may share an upstream write (`batch_patches`): the request that
    /// write sends, computed when first needed.
    signature: Option<WriteSignature>,
    batchable: bool,
    resource: Handle,
    /// Re-applications after the upstream refused patchgate's conditional write.
    retries: u32,
    /// Set once a combined write was refused: from then on written on its own.
    alone: bool,
    /// The last write sent carried other PATCHes.
    carried: bool,
    /// A stale PATCH merged onto the current version: the version it was made for.
    rebased_from: Option<crate::etag::EntityTag>,
}

impl Walk<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            route: self.route,
            key: &self.key,
            parts: &self.parts,
        }
    }
}

/// What the client asked to write.
enum Intent {
    Patch(Arc<Patch>),
    Put(Bytes),
    Delete,
}

/// What happens instead of the next phase. Large (it may hold a response), but moved
/// once per phase and never stored: boxing it would allocate on every answer.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The walk ends with this answer or error.
    Done(Result<Response<Body>, Error>),
    /// Once more from the current state.
    Again,
}

impl From<Error> for Next {
    fn from(error: Error) -> Next {
        Next::Done(Err(error))
    }
}

/// How the queue phase ends.
enum Queued {
    /// This write's turn: the resource's lock.
    Turn(WriteGuard),
    /// Another write carried this PATCH: its answer.
    Carried(Response<Body>),
}

/// A write ready to be sent, with everything its task needs.
struct Write {
    sending: Sending,
    /// The PATCHes this write carries.
    batch: Claimed,
    /// What a PATCH wrote, parsed and serialized, to keep for the next one.
    written: Option<(Document, Bytes)>,
}

/// The upstream write itself.
struct Sending {
    key: Key,
    /// A copy of the client's request head: the task may outlive the request.
    parts: request::Parts,
    method: Method,
    current: Option<Arc<Entry>>,
    /// `current` is the version this write replaces as far as patchgate can tell: read
    /// for it (or kept by a `freshness = "exclusive"` route), not a cached copy a blind
    /// PUT or DELETE lent its ETag. Decides what the change feed says of the old version.
    current_known: bool,
    new_body: Option<Bytes>,
    /// `new_body` is a PATCH's result, serialized by patchgate.
    patched: bool,
}

/// After a conflict, or a write whose outcome never came, the cache cannot be trusted:
/// read the upstream.
fn force_upstream(walk: &Walk<'_>) -> bool {
    walk.retries > 0 || walk.resource.is_uncertain()
}

/// An unconditional PUT or DELETE replaces whatever is there: no need to read it first
/// (a cached copy still lends its upstream ETag to the write).
fn blind(walk: &Walk<'_>) -> bool {
    !force_upstream(walk) && walk.conditions.is_empty() && !matches!(walk.intent, Intent::Patch(_))
}

impl Ctx {
    pub(crate) async fn write(
        &self,
        route: &CompiledRoute,
        req: Request<Body>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        let mut walk = self.intent(route, req, exchange).await?;
        let mut lock = match self.queue(&mut walk, exchange).await? {
            Queued::Turn(lock) => lock,
            Queued::Carried(response) => return Ok(response),
        };
        loop {
            self.lease(&walk, &mut lock).await?;
            let next = match self.prepare(&mut walk, &lock, exchange).await {
                Ok(write) => {
                    let landed = self.send_write(&walk, write, lock).await?;
                    lock = landed.lock;
                    if landed.cache != "-" {
                        exchange.cache = landed.cache;
                    }
                    self.settle(&mut walk, landed.result, exchange).await
                }
                Err(next) => next,
            };
            if let Next::Done(result) = next {
                return match (&walk.rebased_from, result) {
                    (Some(base), Ok(mut response)) if response.status().is_success() => {
                        stale::mark_rebased(&mut response, base);
                        Ok(response)
                    }
                    (_, result) => result,
                };
            }
        }
    }

    /// Phase **queue**: this write's turn at the resource, or the answer of the write
    /// that carried it.
    async fn queue(&self, walk: &mut Walk<'_>, exchange: &mut Exchange) -> Result<Queued, Error> {
        let carry = match &walk.intent {
            Intent::Patch(patch) if walk.batchable && walk.conditions.is_empty() => {
                // Free now: nothing to wait for, nobody to be carried by.
                if let Some(guard) = walk.resource.try_lock() {
                    return Ok(Queued::Turn(guard));
                }
                let patch = Arc::clone(patch);
                Some((patch, self.signature(walk).clone()))
            }
            _ => None,
        };
        match walk.resource.turn(carry).await {
            Turn::Lock(guard) => Ok(Queued::Turn(guard)),
            Turn::Carried(Verdict::Applied(entry)) => {
                exchange.cache = "batched";
                self.shared.metrics.event(walk.route.id, Event::PatchApplied);
                Ok(Queued::Carried(patched(&entry, walk.route, &walk.parts)))
            }
            Turn::Carried(Verdict::Failed(status)) => Err(Error::BatchWriteFailed { status }),
            // `turn` gives the lock to a PATCH sent back to write alone.
            Turn::Carried(Verdict::Alone) => Err(Error::BatchWriteFailed {
                status: StatusCode::BAD_GATEWAY,
            }),
        }
    }

    /// With `[cluster]`, the resource's lease across instances, held with the lock until
    /// the write lands (or, unsent, until the lock goes).
    async fn lease(&self, walk: &Walk<'_>, lock: &mut WriteGuard) -> Result<(), Error> {
        let Some(cluster) = &self.shared.cluster else {
            return Ok(());
        };
        if lock.has_lease() {
            return Ok(());
        }
        let lease = cluster
            .lease(
                &self.shared,
                lock.resource(),
                &walk.route.config.name,
                &walk.key.path,
                self.settings.request_timeout,
            )
            .await
            .map_err(|refusal| cluster.refused(refusal))?;
        lock.hold_lease(lease);
        Ok(())
    }

    /// Phases **current**, **preconditions** and **apply**: the write to send.
    async fn prepare(
        &self,
        walk: &mut Walk<'_>,
        lock: &WriteGuard,
        exchange: &mut Exchange,
    ) -> Result<Write, Next> {
        let blind = blind(walk);
        let current = self.current_state(walk, blind, exchange).await?;
        self.preconditions(walk, current.as_ref()).await?;
        let mut write = self.apply_all(walk, current, lock)?;
        write.sending.current_known =
            !blind || walk.route.config.freshness == crate::config::Freshness::Exclusive;
        Ok(write)
    }

    /// Phase **current**: the representation the write applies to (`None`: missing, for
    /// a PUT, or a blind DELETE).
    async fn current_state(
        &self,
        walk: &Walk<'_>,
        blind: bool,
        exchange: &mut Exchange,
    ) -> Result<Option<Arc<Entry>>, Next> {
        let force_upstream = force_upstream(walk);
        let lookup = if blind {
            match self.shared.cache.get(&walk.key, &walk.parts.headers) {
                Some(entry) => Lookup::Found(entry),
                None => Lookup::Other(crate::body::status_only(StatusCode::NOT_FOUND)),
            }
        } else {
            self.current(walk.target(), force_upstream, exchange).await?
        };
        match lookup {
            Lookup::Found(entry) => Ok(Some(entry)),
            Lookup::Other(response) => match (response.status(), &walk.intent) {
                (StatusCode::NOT_FOUND, Intent::Put(_)) => Ok(None),
                (StatusCode::NOT_FOUND, Intent::Delete) if blind => Ok(None),
                // A PATCH needs the whole document; this one is too large to hold.
                (StatusCode::OK, _) => Err(self.too_large().into()),
                // §13.2.1: a missing resource is 404 whatever the preconditions.
                _ => Err(answer(response)),
            },
        }
    }

    /// Phase **preconditions** (RFC 9110 §13.2.2): a failure is answered with the
    /// current representation.
    async fn preconditions(&self, walk: &mut Walk<'_>, current: Option<&Arc<Entry>>) -> Result<(), Next> {
        let etag = current.map(|e| e.etag());
        let state = Current {
            exists: current.is_some(),
            etag: etag.as_ref(),
            last_modified: current.and_then(|e| e.last_modified()),
        };
        walk.rebased_from = None;
        if evaluate(&walk.conditions, &state, false) == Outcome::Proceed {
            return Ok(());
        }
        match self.stale(walk, current).await {
            stale::Stale::Rebase(base) => {
                self.shared.metrics.event(walk.route.id, Event::StaleMerged);
                walk.rebased_from = Some(base);
                return Ok(());
            }
            stale::Stale::Collides(response) => {
                self.shared
                    .metrics
                    .event(walk.route.id, Event::PreconditionFailed);
                return Err(answer(response));
            }
            stale::Stale::Reject => {}
        }
        self.shared
            .metrics
            .event(walk.route.id, Event::PreconditionFailed);
        Err(match self.enriched_412(walk.route, current, &walk.parts) {
            Ok(response) => answer(response),
            Err(error) => Next::Done(Err(error)),
        })
    }

    /// Phase **apply**: the new body, with the waiting PATCHes this write carries.
    fn apply_all(
        &self,
        walk: &mut Walk<'_>,
        current: Option<Arc<Entry>>,
        lock: &WriteGuard,
    ) -> Result<Write, Next> {
        let mut batch = Claimed::default();
        let mut written = None;
        let new_body = match (&walk.intent, &current) {
            (Intent::Patch(patch), Some(entry)) => {
                // A kept tree is taken out either way: it is the tree of this entry only.
                let kept = walk.resource.take_kept(&self.shared.resources, entry);
                let indexed = if entry.patched() {
                    Document::index_written(&entry.body(), patch)
                } else {
                    Document::index(&entry.body(), patch)
                };
                let doc = match (indexed, kept) {
                    (Some(doc), _) | (None, Some(doc)) => doc,
                    (None, None) => Document::parse(entry.body_bytes())
                        .inspect_err(|_| {
                            self.shared.metrics.event(walk.route.id, Event::CurrentNotJson);
                        })
                        .map_err(Error::Patch)?,
                };
                let mut doc = self.apply(walk.route, patch, doc, entry)?;
                // Its tests passed and it changes nothing: the document as it is.
                if patch.only_tests() {
                    self.shared.metrics.event(walk.route.id, Event::PatchUnchanged);
                    return Err(answer(patched(entry, walk.route, &walk.parts)));
                }
                if walk.batchable && !walk.alone && lock.has_waiting() {
                    let signature = self.signature(walk);
                    self.carry(lock, signature, &mut doc, &mut batch);
                }
                match doc.serialize(self.max_body()) {
                    Ok(bytes) => {
                        // An indexed document holds the old body: the next PATCH indexes the new one.
                        written = (!doc.is_indexed()).then(|| (doc, bytes.clone()));
                        Some(bytes)
                    }
                    Err(e) if batch.is_empty() => return Err(self.patch_failed(walk.route, e).into()),
                    Err(_) => {
                        // Together too large: each one on its own.
                        batch.settle(|| Verdict::Alone);
                        walk.alone = true;
                        return Err(Next::Again);
                    }
                }
            }
            // The current phase answers a PATCH of a missing resource: never here.
            (Intent::Patch(_), None) => {
                return Err(answer(crate::body::status_only(StatusCode::NOT_FOUND)));
            }
            (Intent::Put(bytes), _) => Some(bytes.clone()),
            (Intent::Delete, _) => None,
        };
        walk.carried = !batch.is_empty();
        if walk.carried {
            batch.mark_sent();
            self.shared.metrics.event(walk.route.id, Event::BatchedWrite);
        }
        Ok(Write {
            sending: Sending {
                key: walk.key.clone(),
                parts: clone_parts(&walk.parts),
                method: self.write_method(walk),
                current,
                current_known: true,
                new_body,
                patched: matches!(walk.intent, Intent::Patch(_)),
            },
            batch,
            written,
        })
    }

    /// Phase **write**: sends it, never to be cancelled, and waits for its answer up to
    /// `request_timeout`; the write itself goes on, holding the lock, until it lands.
    async fn send_write(
        &self,
        walk: &Walk<'_>,
        write: Write,
        lock: WriteGuard,
    ) -> Result<land::Landed, Error> {
        let landing = self.launch(walk.route, write, lock);
        tokio::time::timeout(self.settings.request_timeout, landing)
            .await
            .map_err(|_| Error::WriteStillRunning)
    }

    /// Phase **settle**: the client's answer, or once more after a refusal.
    async fn settle(
        &self,
        walk: &mut Walk<'_>,
        result: Result<Attempt, Error>,
        exchange: &mut Exchange,
    ) -> Next {
        let route = walk.route;
        match result {
            Err(error) => Next::Done(Err(error)),
            // Refused, so nothing was written: one of the carried PATCHes may be the cause.
            Ok(Attempt::Done(response, None)) if walk.carried && response.status().is_client_error() => {
                walk.alone = true;
                Next::Again
            }
            Ok(Attempt::Done(response, _)) => answer(response),
            Ok(Attempt::Conflict) if !walk.conditions.any_write_condition() => {
                if walk.retries < route.config.conflict_retries {
                    walk.retries += 1;
                    self.shared.metrics.event(route.id, Event::ConflictRetry);
                    return Next::Again;
                }
                let etag = match self.current(walk.target(), true, exchange).await {
                    Ok(Lookup::Found(entry)) => Some(entry.etag().into_header_value()),
                    Ok(Lookup::Other(_)) => None,
                    Err(error) => return Next::Done(Err(error)),
                };
                Next::Done(Err(Error::ConflictRetriesExhausted { etag }))
            }
            Ok(Attempt::Conflict) => {
                // The client stated a precondition: it decides, with the current body.
                self.shared
                    .metrics
                    .event(route.id, Event::UpstreamPreconditionFailed);
                let current = match self.current(walk.target(), true, exchange).await {
                    Ok(Lookup::Found(entry)) => Some(entry),
                    Ok(Lookup::Other(_)) => None,
                    Err(error) => return Next::Done(Err(error)),
                };
                match self.enriched_412(route, current.as_ref(), &walk.parts) {
                    Ok(response) => answer(response),
                    Err(error) => Next::Done(Err(error)),
                }
            }
        }
    }

    /// Applies a patch; a failed `test` carries the ETag it was evaluated against.
    fn apply(
        &self,
        route: &CompiledRoute,
        patch: &Patch,
        doc: Document,
        current: &Entry,
    ) -> Result<Document, Error> {
        patch
            .apply(doc, self.max_body())
            .map_err(|e| match self.patch_failed(route, e) {
                Error::Patch(e @ PatchError::TestFailed { .. }) => Error::PatchConflict {
                    error: e,
                    etag: current.etag().into_header_value(),
                },
                error => error,
            })
    }

    /// Takes the waiting PATCHes that would send this write's request and applies each
    /// that applies to `doc`, in arrival order; the others are sent back to write alone.
    fn carry(&self, lock: &WriteGuard, signature: &WriteSignature, doc: &mut Document, batch: &mut Claimed) {
        for joiner in lock.take_carried(signature) {
            match joiner.patch.apply_in_place(doc, self.max_body()) {
                Ok(()) => batch.push(joiner),
                Err(_) => joiner.release(),
            }
        }
    }

    fn patch_failed(&self, route: &CompiledRoute, e: PatchError) -> Error {
        let error = Error::Patch(e);
        self.shared.metrics.event(route.id, Event::PatchFailed(&error));
        error
    }

    fn max_body(&self) -> usize {
        usize::try_from(self.settings.max_body_bytes).unwrap_or(usize::MAX)
    }

    fn too_large(&self) -> Error {
        Error::Patch(PatchError::TooLarge { max: self.max_body() })
    }

    /// What a PATCH's upstream write sends apart from its body and the upstream's own
    /// `If-Match`: what another write must send too to carry it.
    fn signature<'w>(&self, walk: &'w mut Walk<'_>) -> &'w WriteSignature {
        walk.signature.get_or_insert_with(|| WriteSignature {
            target: walk.parts.uri.clone(),
            identity: crate::upstream::identity(&walk.parts),
        })
    }

    fn write_method(&self, walk: &Walk<'_>) -> Method {
        match walk.intent {
            Intent::Patch(_) => walk.route.config.write_method.clone(),
            Intent::Put(_) => Method::PUT,
            Intent::Delete => Method::DELETE,
        }
    }
}

/// A copy of a request's head (its body stays with the request).
pub(crate) fn head_of<B>(req: &Request<B>) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.headers = req.headers().clone();
    parts
}

fn answer(response: Response<Body>) -> Next {
    Next::Done(Ok(response))
}
