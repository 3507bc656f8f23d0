<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Command;

use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Symfony\Component\Console\Attribute\AsCommand;
use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Input\InputArgument;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Output\OutputInterface;

/** Recent ingestions as the ledger knows them, or one of them. */
#[AsCommand(name: 'pimingest:status')]
final class StatusCommand extends Command
{
    public function __construct(private readonly Ledger $ledger)
    {
        parent::__construct();
    }

    protected function configure(): void
    {
        $this->setDescription('Show recent ingestions, or one, as the ledger records them')
            ->addArgument('ingestion', InputArgument::OPTIONAL, 'an ingestion id');
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        $id = $input->getArgument('ingestion');
        $rows = \is_string($id) ? array_filter([$this->ledger->ingestion($id)]) : $this->ledger->recent();
        if (\is_string($id) && $rows === []) {
            $output->writeln("pimingest: no ingestion {$id}");

            return Command::FAILURE;
        }
        foreach ($rows as $r) {
            $output->writeln(sprintf(
                '%s  %-9s next chunk %d, %d records taken  %s',
                $r['ingestion_id'], $r['status'], $r['next_chunk'], $r['records_taken'], $r['file_name'] ?? '',
            ));
        }

        return Command::SUCCESS;
    }
}
