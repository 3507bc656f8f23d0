<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Migrations;

use Doctrine\DBAL\Schema\Schema;
use Doctrine\Migrations\AbstractMigration;
use Pimingestd\PimcoreBundle\Ledger\Schema as LedgerSchema;

/**
 * Protocol v1.1: each applied chunk keeps the records its ACK refused (repeated in every re-ACK) and how many
 * tombstones it held (checked against the completion's `deleted`). `pimingest:setup` adds the same columns.
 * Only where missing: on a fresh database Version20261201000000 has just created the table with them.
 */
final class Version20261202000000 extends AbstractMigration
{
    public function getDescription(): string
    {
        return 'pimingest ledger: pimingest_chunk.refused, pimingest_chunk.tombstones';
    }

    public function up(Schema $schema): void
    {
        LedgerSchema::chunkOutcomes($schema->getTable(LedgerSchema::CHUNK));
    }

    public function down(Schema $schema): void
    {
        $table = $schema->getTable(LedgerSchema::CHUNK);
        $table->dropColumn('refused');
        $table->dropColumn('tombstones');
    }
}
